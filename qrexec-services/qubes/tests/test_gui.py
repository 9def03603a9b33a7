"""Tests bin/trusted-convert-gui: report counting, the notification text, and real runs.

The end-to-end tests run the real qvm-convert-pdf and qvm-convert-img (local transport, off
Qubes) from $TRUSTED_CONVERTERS_BIN_DIR or the workspace's target/debug, on files of the
shared corpus, and are skipped when either is missing. Only notify-send is replaced, by a
script that records its arguments: a notification daemon cannot run here.
"""

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
GUI = os.path.join(HERE, "..", "bin", "trusted-convert-gui")
BIN_DIR = os.environ.get("TRUSTED_CONVERTERS_BIN_DIR",
                         os.path.join(HERE, "..", "..", "..", "target", "debug"))
CORPUS = os.environ.get("TRUSTED_CONVERTERS_CORPUS", "/work/shared/corpus")


def load_gui():
    loader = importlib.machinery.SourceFileLoader("trusted_convert_gui", GUI)
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


gui = load_gui()


def report(status, name):
    return json.dumps({"input": f"/home/user/{name}.pdf",
                       "output": f"/home/user/{name}.trusted.pdf" if status == "converted"
                       else None,
                       "status": status, "error": "<b>text from the uvm</b>"})


class SummaryTest(unittest.TestCase):
    def test_all_converted_names_outputs(self):
        tally = gui.Tally()
        tally.add_line(report("converted", "a"))
        tally.add_line(report("converted", "b"))
        title, body, urgency = gui.summary(tally, 0, False)
        self.assertEqual(title, "Converted 2 files")
        self.assertEqual(body, "Written: a.trusted.pdf, b.trusted.pdf")
        self.assertEqual(urgency, "normal")

    def test_failures_are_counted_and_named_without_error_text(self):
        tally = gui.Tally()
        tally.add_line(report("converted", "a"))
        tally.add_line(report("failed", "b"))
        title, body, urgency = gui.summary(tally, 1, False)
        self.assertEqual(title, "Converted 1 of 2 files")
        self.assertIn("Failed: b.pdf", body)
        self.assertNotIn("uvm", body)
        self.assertEqual(urgency, "critical")

    def test_names_are_markup_escaped(self):
        tally = gui.Tally()
        tally.add_line(report("converted", "<i>&x"))
        _, body, _ = gui.summary(tally, 0, False)
        self.assertIn("&lt;i&gt;&amp;x.trusted.pdf", body)
        self.assertNotIn("<i>", body)

    def test_long_lists_are_cut(self):
        tally = gui.Tally()
        for i in range(8):
            tally.add_line(report("converted", f"f{i}"))
        _, body, _ = gui.summary(tally, 0, False)
        self.assertTrue(body.endswith("and 3 more"), body)

    def test_lines_that_are_not_reports_are_not_counted(self):
        tally = gui.Tally()
        for line in ("", "not json", "[]", '{"input": "x"}'):
            tally.add_line(line)
        self.assertEqual((tally.done, tally.unreadable), (0, 4))
        title, _, urgency = gui.summary(tally, 2, False)
        self.assertEqual(title, "Conversion could not start (exit status 2)")
        self.assertEqual(urgency, "critical")

    def test_cancel_is_reported(self):
        tally = gui.Tally()
        tally.add_line(report("converted", "a"))
        self.assertEqual(gui.summary(tally, -15, True)[0], "Conversion cancelled after 1 file")

    def test_unknown_kind_is_a_usage_error(self):
        self.assertEqual(gui.main(["doc", "x"]), 2)
        self.assertEqual(gui.main(["pdf"]), 2)


@unittest.skipUnless(
    all(os.access(os.path.join(BIN_DIR, p), os.X_OK)
        for p in ("qvm-convert-pdf", "qvm-convert-img", "pdf-uvm", "image-uvm"))
    and os.path.isdir(CORPUS),
    "the built converters or the corpus are missing")
class EndToEndTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        t = self.tmp.name
        self.bin = os.path.join(t, "bin")
        os.makedirs(self.bin)
        self.notes = os.path.join(t, "notes")
        stub = os.path.join(self.bin, "notify-send")
        with open(stub, "w", encoding="utf-8") as f:
            f.write("#!/usr/bin/python3\nimport json, sys\n"
                    f"with open({self.notes!r}, 'a') as f:\n"
                    "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n")
        os.chmod(stub, 0o755)
        self.docs = os.path.join(t, "docs")
        os.makedirs(self.docs)
        self.env = {"PATH": os.pathsep.join([self.bin, os.path.abspath(BIN_DIR),
                                             "/usr/bin", "/bin"]),
                    "HOME": t}

    def tearDown(self):
        self.tmp.cleanup()

    def corpus(self, name, as_name=None):
        dest = os.path.join(self.docs, as_name or name)
        shutil.copyfile(os.path.join(CORPUS, name), dest)
        return dest

    def run_gui(self, *args, cwd=None):
        result = subprocess.run([GUI, *args], env=self.env, capture_output=True, text=True,
                                timeout=300, cwd=cwd)
        with open(self.notes, encoding="utf-8") as f:
            notes = [json.loads(line) for line in f]
        self.assertEqual(len(notes), 1)
        return result.returncode, notes[0]

    def test_two_images_are_both_converted_not_read_as_src_dst(self):
        a = self.corpus("camera.png")
        b = self.corpus("python.gif")
        status, note = self.run_gui("img", a, b)
        self.assertEqual(status, 0)
        self.assertIn("Converted 2 files", note)
        self.assertIn("Written: camera.trusted.png, python.trusted.png", note)
        self.assertTrue(os.path.isfile(os.path.join(self.docs, "camera.trusted.png")))
        self.assertTrue(os.path.isfile(os.path.join(self.docs, "python.trusted.png")))

    def test_pdf_and_a_broken_pdf_give_one_converted_one_failed(self):
        self.corpus("text-short-cfgguide.pdf")
        broken = os.path.join(self.docs, "broken.pdf")
        with open(broken, "wb") as f:
            f.write(b"%PDF-1.7\nthis is not a document\n")
        status, note = self.run_gui("pdf", os.path.join(self.docs, "text-short-cfgguide.pdf"),
                                    broken)
        self.assertEqual(status, 1)
        self.assertIn("--urgency=critical", note)
        self.assertIn("Converted 1 of 2 files", note)
        self.assertIn("Written: text-short-cfgguide.trusted.pdf\nFailed: broken.pdf", note)

    def test_file_name_starting_with_dash_is_a_file(self):
        self.corpus("camera.png", "-i.png")
        status, note = self.run_gui("img", "-i.png", cwd=self.docs)
        self.assertEqual(status, 0, note)
        self.assertIn("Written: -i.trusted.png", note)


if __name__ == "__main__":
    unittest.main()
