"""Nautilus menu items that convert the selected files with the trusted converters.

Install as ~/.local/share/nautilus-python/extensions/trusted_converters_nautilus.py (or under
/usr/share/nautilus-python/extensions/ for every user) with nautilus-python for Nautilus 43
and later (extension API 4.0), then restart Nautilus (`nautilus -q`).

PDF files get "Convert to trusted PDF"; image files get that too (each becomes a one-page
PDF) and "Convert to trusted image". Both run trusted-convert-gui, which shows the progress
and a notification at the end; this file only decides which items to offer.
"""

import subprocess

import gi

gi.require_version("Nautilus", "4.0")
from gi.repository import GObject, Nautilus  # noqa: E402  (must follow require_version)

LAUNCHER = "trusted-convert-gui"
PDF_TYPES = frozenset({"application/pdf"})
# The formats the image service decodes (the `image` crate's codecs built into image-uvm).
IMAGE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/bmp", "image/tiff", "image/webp",
    "image/vnd.microsoft.icon", "image/x-icon", "image/x-portable-anymap",
    "image/x-portable-bitmap", "image/x-portable-graymap", "image/x-portable-pixmap",
    "image/x-tga", "image/x-qoi",
})


def local_paths(files):
    """The selection's local paths, or None when any item is not a local regular file."""
    paths = []
    for info in files:
        if info.is_directory() or info.get_uri_scheme() != "file":
            return None
        location = info.get_location()
        path = location.get_path() if location is not None else None
        if path is None:
            return None
        paths.append(path)
    return paths


def launch(_item, kind, paths):
    # Detached: Nautilus must not wait for a conversion, and the launcher reports by itself.
    subprocess.Popen([LAUNCHER, kind, *paths], stdin=subprocess.DEVNULL,
                     start_new_session=True)


class TrustedConvertersMenu(GObject.GObject, Nautilus.MenuProvider):
    """Adds the conversion items to the context menu of PDF and image files."""

    def get_file_items(self, files):
        if not files:
            return []
        types = {info.get_mime_type() for info in files}
        if not types <= (PDF_TYPES | IMAGE_TYPES):
            return []
        paths = local_paths(files)
        if paths is None:
            return []

        items = []
        pdf = Nautilus.MenuItem(
            name="TrustedConverters::ToPdf",
            label="Convert to trusted PDF",
            tip="Render in a disposable and rebuild a clean PDF from the pixels",
        )
        pdf.connect("activate", launch, "pdf", paths)
        items.append(pdf)
        if types <= IMAGE_TYPES:
            img = Nautilus.MenuItem(
                name="TrustedConverters::ToImage",
                label="Convert to trusted image",
                tip="Decode in a disposable and rebuild a clean PNG from the pixels",
            )
            img.connect("activate", launch, "img", paths)
            items.append(img)
        return items
