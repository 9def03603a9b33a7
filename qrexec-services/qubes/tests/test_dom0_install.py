"""Runs dom0/install-converters and uninstall-converters against stand-in qvm-* tools.

Qubes' dom0 cannot run here, so tests/fake-qubes/qvm-stub plays qvm-check, qvm-create,
qvm-prefs, qvm-features and qvm-remove: it records each call and keeps the qubes it creates
as folders, so the scripts get the answers Qubes would give. The kernels and policy folders
are pointed into a temporary folder; everything else is the real script.
"""

import hashlib
import json
import os
import shlex
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
INSTALL = os.path.join(ROOT, "dom0", "install-converters")
UNINSTALL = os.path.join(ROOT, "dom0", "uninstall-converters")
POLICY = os.path.join(ROOT, "policy", "30-trusted-converters.policy")
STUB = os.path.join(HERE, "fake-qubes", "qvm-stub")
TOOLS = ("qvm-check", "qvm-create", "qvm-prefs", "qvm-features", "qvm-remove")
TEMPLATES = {"trusted-pdf-dvm": "trusted-pdf-uvm", "trusted-img-dvm": "trusted-img-uvm"}


def write_image(folder, tag):
    """An image folder as uvm-image writes it, with stand-in kernel and initramfs bytes."""
    os.makedirs(folder)
    files = []
    for name in ("vmlinux", "bzImage", "initramfs.gz"):
        data = f"{tag} {name}\n".encode()
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)
        files.append({"name": name, "bytes": len(data),
                      "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"program": tag, "kernel_key": "0" * 16, "files": files,
                "initramfs_entries": []}
    with open(os.path.join(folder, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)


class Dom0ScriptsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        t = self.tmp.name
        self.bin = os.path.join(t, "bin")
        os.makedirs(self.bin)
        for tool in TOOLS:
            os.symlink(STUB, os.path.join(self.bin, tool))
        self.state = os.path.join(t, "state")
        self.kernels = os.path.join(t, "vm-kernels")
        self.policy_dir = os.path.join(t, "policy.d")
        os.makedirs(self.kernels)
        os.makedirs(self.policy_dir)
        self.images = os.path.join(t, "images")
        write_image(os.path.join(self.images, "pdf"), "pdf")
        write_image(os.path.join(self.images, "image"), "image")
        self.env = dict(os.environ,
                        PATH=self.bin + os.pathsep + os.environ["PATH"],
                        FAKE_QUBES_STATE=self.state,
                        TRUSTED_CONVERTERS_KERNELS_DIR=self.kernels,
                        TRUSTED_CONVERTERS_POLICY_DIR=self.policy_dir)

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, *args):
        return subprocess.run(list(args), env=self.env, capture_output=True, text=True,
                              timeout=60)

    def calls(self):
        path = os.path.join(self.state, "calls")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            return [shlex.split(line) for line in f]

    def pref(self, vm, name, kind="prefs"):
        with open(os.path.join(self.state, "vms", vm, kind, name), encoding="utf-8") as f:
            return f.read()

    def test_dry_run_prints_the_changes_and_makes_none(self):
        result = self.run_script(INSTALL, "--dry-run", self.images)
        self.assertEqual(result.returncode, 0, result.stderr)
        printed = [shlex.split(line) for line in result.stdout.splitlines()]
        creates = [c for c in printed if c[:1] == ["qvm-create"]]
        self.assertEqual(sorted(c[-1] for c in creates), sorted(TEMPLATES))
        for create in creates:
            props = {create[i + 1] for i, a in enumerate(create) if a == "--property"}
            kernel = TEMPLATES[create[-1]]
            self.assertLessEqual({"virt_mode=pvh", f"kernel={kernel}", "kernelopts=",
                                  "memory=256", "maxmem=256", "vcpus=1", "netvm="}, props)
        for name in TEMPLATES:
            for feature in (["no-default-kernelopts", "1"], ["qrexec", "1"], ["gui", ""]):
                self.assertIn(["qvm-features", name, *feature], printed)
            self.assertIn(["qvm-prefs", name, "template_for_dispvms", "True"], printed)
        self.assertIn(["install", "-m", "0644", os.path.join(self.images, "pdf", "bzImage"),
                       os.path.join(self.kernels, "trusted-pdf-uvm", "vmlinuz")], printed)
        # Only the read-only existence checks ran; nothing was created or copied.
        self.assertEqual({c[0] for c in self.calls()}, {"qvm-check"})
        self.assertEqual(os.listdir(self.kernels), [])
        self.assertEqual(os.listdir(self.policy_dir), [])

    def test_install_creates_both_templates_kernels_and_policy(self):
        result = self.run_script(INSTALL, self.images)
        self.assertEqual(result.returncode, 0, result.stderr)
        creates = [c for c in self.calls() if c[0] == "qvm-create"]
        self.assertEqual(len(creates), 2)
        for vm, kernel in TEMPLATES.items():
            self.assertEqual(self.pref(vm, "klass"), "AppVM")
            self.assertEqual(self.pref(vm, "kernel"), kernel)
            self.assertEqual(self.pref(vm, "virt_mode"), "pvh")
            self.assertEqual(self.pref(vm, "kernelopts"), "")
            self.assertEqual(self.pref(vm, "netvm"), "")
            self.assertEqual(self.pref(vm, "vcpus"), "1")
            self.assertEqual(self.pref(vm, "memory"), self.pref(vm, "maxmem"))
            self.assertEqual(self.pref(vm, "template_for_dispvms"), "True")
            self.assertEqual(self.pref(vm, "no-default-kernelopts", "features"), "1")
            self.assertEqual(self.pref(vm, "qrexec", "features"), "1")
        with open(os.path.join(self.kernels, "trusted-pdf-uvm", "vmlinuz"), "rb") as f:
            self.assertEqual(f.read(), b"pdf bzImage\n")
        with open(os.path.join(self.kernels, "trusted-img-uvm", "initramfs"), "rb") as f:
            self.assertEqual(f.read(), b"image initramfs.gz\n")
        with open(os.path.join(self.policy_dir, "30-trusted-converters.policy"), "rb") as f, \
                open(POLICY, "rb") as g:
            self.assertEqual(f.read(), g.read())

    def test_second_run_updates_without_creating(self):
        self.assertEqual(self.run_script(INSTALL, self.images).returncode, 0)
        before = len(self.calls())
        # Someone changed a property by hand; the re-run puts it back.
        with open(os.path.join(self.state, "vms", "trusted-pdf-dvm", "prefs", "netvm"),
                  "w", encoding="utf-8") as f:
            f.write("sys-firewall")
        result = self.run_script(INSTALL, self.images)
        self.assertEqual(result.returncode, 0, result.stderr)
        again = self.calls()[before:]
        self.assertNotIn("qvm-create", [c[0] for c in again])
        self.assertEqual(self.pref("trusted-pdf-dvm", "netvm"), "")

    def test_image_not_matching_its_manifest_is_refused_before_any_change(self):
        with open(os.path.join(self.images, "image", "bzImage"), "ab") as f:
            f.write(b"x")
        result = self.run_script(INSTALL, self.images)
        self.assertEqual(result.returncode, 1)
        self.assertIn("does not match its manifest.json", result.stderr)
        self.assertEqual(self.calls(), [])
        self.assertEqual(os.listdir(self.kernels), [])

    def test_existing_qube_of_another_class_is_refused(self):
        vm = os.path.join(self.state, "vms", "trusted-pdf-dvm", "prefs")
        os.makedirs(vm)
        with open(os.path.join(vm, "klass"), "w", encoding="utf-8") as f:
            f.write("StandaloneVM")
        result = self.run_script(INSTALL, self.images)
        self.assertEqual(result.returncode, 1)
        self.assertIn("is a StandaloneVM", result.stderr)
        self.assertNotIn("qvm-create", [c[0] for c in self.calls()])

    def test_missing_folder_is_a_usage_error(self):
        self.assertEqual(self.run_script(INSTALL).returncode, 2)
        self.assertEqual(self.run_script(INSTALL, "--bogus", self.images).returncode, 2)

    def test_uninstall_removes_what_install_made_and_reruns_cleanly(self):
        self.assertEqual(self.run_script(INSTALL, self.images).returncode, 0)
        result = self.run_script(UNINSTALL)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(os.listdir(self.kernels), [])
        self.assertEqual(os.listdir(self.policy_dir), [])
        self.assertEqual(os.listdir(os.path.join(self.state, "vms")), [])
        self.assertEqual(self.run_script(UNINSTALL).returncode, 0)

    def test_uninstall_dry_run_changes_nothing(self):
        self.assertEqual(self.run_script(INSTALL, self.images).returncode, 0)
        result = self.run_script(UNINSTALL, "--dry-run")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("qvm-remove --force trusted-pdf-dvm", result.stdout)
        self.assertEqual(sorted(os.listdir(self.kernels)),
                         ["trusted-img-uvm", "trusted-pdf-uvm"])
        self.assertEqual(len(os.listdir(os.path.join(self.state, "vms"))), 2)


if __name__ == "__main__":
    unittest.main()
