"""Tests the file-manager actions: Thunar's merge, the Dolphin menus, the Nautilus items.

Nautilus cannot run here (no display, no nautilus-python), so the Nautilus test loads the
extension against a small stand-in for the `gi` Nautilus 4.0 API that records the menu
items; it checks which items are offered for which selection, not Nautilus itself.
"""

import configparser
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
import tempfile
import types
import unittest
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
THUNAR = os.path.join(ROOT, "thunar", "install-thunar-actions")
DOLPHIN = os.path.join(ROOT, "dolphin")
NAUTILUS = os.path.join(ROOT, "nautilus", "trusted_converters_nautilus.py")
OUR_IDS = {"trusted-converters-to-pdf", "trusted-converters-to-image"}
USER_FILE = ('<?xml version="1.0" encoding="UTF-8"?>\n<actions>\n<!-- mine -->\n'
             '<action><name>Mine</name><unique-id>123-1</unique-id>'
             '<command>echo %f</command></action>\n</actions>\n')


class ThunarMergeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.tmp.name, "Thunar", "uca.xml")

    def tearDown(self):
        self.tmp.cleanup()

    def run_tool(self, *args):
        return subprocess.run([sys.executable, THUNAR, *args], capture_output=True,
                              text=True, timeout=60)

    def ids(self):
        root = ET.parse(self.path).getroot()
        return [a.findtext("unique-id") for a in root.findall("action")]

    def test_merge_keeps_user_actions_and_is_idempotent(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(USER_FILE)
        self.assertEqual(self.run_tool(self.path).returncode, 0)
        with open(self.path, "rb") as f:
            once = f.read()
        self.assertEqual(self.run_tool(self.path).returncode, 0)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), once)
        self.assertEqual(self.ids()[0], "123-1")
        self.assertEqual(set(self.ids()[1:]), OUR_IDS)
        self.assertIn(b"<!-- mine -->", once)

    def test_missing_file_is_created(self):
        self.assertEqual(self.run_tool(self.path).returncode, 0)
        self.assertEqual(set(self.ids()), OUR_IDS)

    def test_remove_takes_out_only_ours(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(USER_FILE)
        self.run_tool(self.path)
        self.assertEqual(self.run_tool("--remove", self.path).returncode, 0)
        self.assertEqual(self.ids(), ["123-1"])

    def test_broken_file_is_left_alone(self):
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("<actions><action>")
        result = self.run_tool(self.path)
        self.assertEqual(result.returncode, 1)
        with open(self.path, encoding="utf-8") as f:
            self.assertEqual(f.read(), "<actions><action>")


def read_desktop(name):
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str
    parser.read(os.path.join(DOLPHIN, name), encoding="utf-8")
    return parser


class DolphinMenuTest(unittest.TestCase):
    def check(self, name, kind):
        menu = read_desktop(name)
        entry = menu["Desktop Entry"]
        self.assertEqual(entry["Type"], "Service")
        self.assertEqual(entry["X-KDE-ServiceTypes"], "KonqPopupMenu/Plugin")
        actions = [a for a in entry["Actions"].split(";") if a]
        self.assertEqual(len(actions), 1)
        action = menu[f"Desktop Action {actions[0]}"]
        self.assertEqual(action["Exec"], f"trusted-convert-gui {kind} %F")
        self.assertTrue(os.access(os.path.join(DOLPHIN, name), os.X_OK))
        return [m for m in entry["MimeType"].split(";") if m]

    def test_pdf_menu_takes_pdf_and_images(self):
        types_ = self.check("trusted-converters-pdf.desktop", "pdf")
        self.assertIn("application/pdf", types_)
        self.assertIn("image/png", types_)

    def test_image_menu_takes_images_only(self):
        types_ = self.check("trusted-converters-image.desktop", "img")
        self.assertTrue(all(t.startswith("image/") for t in types_), types_)


class FakeFile:
    def __init__(self, path, mime, scheme="file", directory=False):
        self.path, self.mime, self.scheme, self.directory = path, mime, scheme, directory

    def get_mime_type(self):
        return self.mime

    def get_uri_scheme(self):
        return self.scheme

    def is_directory(self):
        return self.directory

    def get_location(self):
        return types.SimpleNamespace(get_path=lambda: self.path)


class FakeMenuItem:
    def __init__(self, name, label, tip):
        self.name, self.label, self.tip, self.handlers = name, label, tip, []

    def connect(self, signal, callback, *args):
        self.handlers.append((signal, callback, args))


def load_extension():
    """Loads the extension with a stand-in `gi` offering the few names it uses."""
    nautilus = types.SimpleNamespace(MenuProvider=type("MenuProvider", (), {}),
                                     MenuItem=FakeMenuItem)
    gobject = types.SimpleNamespace(GObject=type("GObject", (), {}))
    repository = types.ModuleType("gi.repository")
    repository.Nautilus, repository.GObject = nautilus, gobject
    gi = types.ModuleType("gi")
    gi.require_version = lambda name, version: None
    gi.repository = repository
    saved = {k: sys.modules.get(k) for k in ("gi", "gi.repository")}
    sys.modules["gi"], sys.modules["gi.repository"] = gi, repository
    try:
        loader = importlib.machinery.SourceFileLoader("trusted_converters_nautilus", NAUTILUS)
        spec = importlib.util.spec_from_loader(loader.name, loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return module


class NautilusItemsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ext = load_extension()
        cls.menu = cls.ext.TrustedConvertersMenu()

    def labels(self, files):
        return [item.label for item in self.menu.get_file_items(files)]

    def test_pdf_gets_the_pdf_item_only(self):
        self.assertEqual(self.labels([FakeFile("/h/a.pdf", "application/pdf")]),
                         ["Convert to trusted PDF"])

    def test_images_get_both_items(self):
        self.assertEqual(self.labels([FakeFile("/h/a.png", "image/png"),
                                      FakeFile("/h/b.jpg", "image/jpeg")]),
                         ["Convert to trusted PDF", "Convert to trusted image"])

    def test_mixed_pdf_and_image_gets_the_pdf_item(self):
        self.assertEqual(self.labels([FakeFile("/h/a.pdf", "application/pdf"),
                                      FakeFile("/h/b.png", "image/png")]),
                         ["Convert to trusted PDF"])

    def test_other_types_remote_files_and_folders_get_nothing(self):
        self.assertEqual(self.labels([FakeFile("/h/a.txt", "text/plain")]), [])
        self.assertEqual(self.labels([FakeFile("/h/a.svg", "image/svg+xml")]), [])
        self.assertEqual(self.labels([FakeFile("/s/a.pdf", "application/pdf", "sftp")]), [])
        self.assertEqual(self.labels([FakeFile("/h/d", "application/pdf",
                                               directory=True)]), [])
        self.assertEqual(self.labels([]), [])

    def test_item_runs_the_launcher_with_the_paths(self):
        item = self.menu.get_file_items([FakeFile("/h/a b.pdf", "application/pdf")])[0]
        signal, callback, args = item.handlers[0]
        self.assertEqual(signal, "activate")
        self.assertIs(callback, self.ext.launch)
        self.assertEqual(args, ("pdf", ["/h/a b.pdf"]))


if __name__ == "__main__":
    unittest.main()
