"""Checks policy/30-trusted-converters.policy against the Qubes 4.1+ policy format.

The format (qubes-core-qrexec, "multifile policy"): one rule a line,
``SERVICE ARGUMENT SOURCE TARGET ACTION [PARAM=VALUE ...]``; ``#`` starts a comment line;
SERVICE is a name or ``*`` (then ARGUMENT must be ``*`` too); ARGUMENT is ``*`` or ``+`` and
the argument; each qube token is valid only in some columns; ``deny`` takes no parameters.
qrexec itself cannot run here (it needs dom0), so the rules are also evaluated by a small
first-match model of its matching, enough to show where each kind of call ends up.
"""

import os
import re
import unittest
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
POLICY = os.path.join(HERE, "..", "policy", "30-trusted-converters.policy")
INSTALL = os.path.join(HERE, "..", "dom0", "install-converters")

CONVERTER_SERVICES = ("qubes.PdfConvert", "qubes.GetImageRGBA")
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
SERVICE = re.compile(r"^[A-Za-z0-9_.-]+$")
ACTIONS = ("allow", "deny", "ask")
PARAMS = {"allow": {"target", "user", "autostart", "notify"},
          "ask": {"target", "user", "default_target", "autostart", "notify"},
          "deny": {"notify"}}


class PolicyError(ValueError):
    """A line that breaks the documented format."""


@dataclass
class Rule:
    """One parsed policy line."""
    lineno: int
    service: str
    argument: str
    source: str
    target: str
    action: str
    params: dict = field(default_factory=dict)


def token_kind(token):
    """Names the kind of a qube token, or raises PolicyError."""
    if token in ("@anyvm", "@adminvm", "@default", "@dispvm"):
        return token
    for prefix in ("@dispvm:@tag:", "@dispvm:", "@tag:", "@type:"):
        if token.startswith(prefix):
            rest = token[len(prefix):]
            if not NAME.match(rest):
                raise PolicyError(f"bad name in {token!r}")
            return prefix
    if token.startswith("@") or not NAME.match(token):
        raise PolicyError(f"unknown qube token {token!r}")
    return "name"


# Which token kinds each column accepts (the table of the multifile policy format).
SOURCE_KINDS = {"name", "@adminvm", "@anyvm", "@dispvm:", "@dispvm:@tag:", "@tag:", "@type:"}
TARGET_KINDS = SOURCE_KINDS | {"@default", "@dispvm"}
REDIRECT_KINDS = {"name", "@adminvm", "@dispvm", "@dispvm:"}


def parse_line(lineno, line):
    """Parses one non-comment line into a Rule, or raises PolicyError."""
    fields = line.split()
    if len(fields) < 5:
        raise PolicyError(f"line {lineno}: {len(fields)} fields, need at least 5")
    service, argument, source, target, action, *params = fields
    if service != "*" and not SERVICE.match(service):
        raise PolicyError(f"line {lineno}: bad service {service!r}")
    if argument != "*" and not argument.startswith("+"):
        raise PolicyError(f"line {lineno}: argument must be * or +ARG, not {argument!r}")
    if service == "*" and argument != "*":
        raise PolicyError(f"line {lineno}: service * needs argument *")
    if token_kind(source) not in SOURCE_KINDS:
        raise PolicyError(f"line {lineno}: {source!r} cannot be a source")
    if token_kind(target) not in TARGET_KINDS:
        raise PolicyError(f"line {lineno}: {target!r} cannot be a target")
    if action not in ACTIONS:
        raise PolicyError(f"line {lineno}: unknown action {action!r}")
    parsed = {}
    for param in params:
        key, sep, value = param.partition("=")
        if not sep or not value:
            raise PolicyError(f"line {lineno}: parameter {param!r} is not KEY=VALUE")
        if key not in PARAMS[action]:
            raise PolicyError(f"line {lineno}: {action} takes no parameter {key!r}")
        if key in ("target", "default_target") and token_kind(value) not in REDIRECT_KINDS:
            raise PolicyError(f"line {lineno}: {value!r} cannot be a {key}")
        parsed[key] = value
    return Rule(lineno, service, argument, source, target, action, parsed)


def parse(text):
    """Parses a whole policy file; comment lines and blank lines are skipped."""
    rules = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("!"):
            raise PolicyError(f"line {lineno}: include statements are not expected here")
        rules.append(parse_line(lineno, stripped))
    return rules


def matches_source(token, qube):
    """qube: (name, template_for_disposable or None). dom0 only matches itself."""
    name, dispvm_of = qube
    if token == "@anyvm":
        return name != "dom0"
    if token.startswith("@dispvm:"):
        return dispvm_of == token[len("@dispvm:"):]
    return token == name


def matches_target(token, requested):
    if token == "@anyvm":
        return requested not in ("@adminvm", "dom0")
    if token == "@adminvm":
        return requested in ("@adminvm", "dom0")
    return token == requested


def evaluate(rules, service, argument, source, requested):
    """First matching rule's (action, effective target), or ('deny', None) if none."""
    for rule in rules:
        if rule.service not in ("*", service):
            continue
        if rule.argument not in ("*", "+" + argument):
            continue
        if matches_source(rule.source, source) and matches_target(rule.target, requested):
            return rule.action, rule.params.get("target", requested)
    return "deny", None


def script_names():
    """The template names install-converters creates."""
    with open(INSTALL, encoding="utf-8") as f:
        text = f.read()
    pdf = re.search(r"^PDF_TEMPLATE=(\S+)$", text, re.M).group(1)
    img = re.search(r"^IMAGE_TEMPLATE=(\S+)$", text, re.M).group(1)
    return pdf, img


class PolicyFileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(POLICY, encoding="utf-8") as f:
            cls.rules = parse(f.read())
        cls.pdf_dvm, cls.img_dvm = script_names()
        cls.dvm = {"qubes.PdfConvert": cls.pdf_dvm, "qubes.GetImageRGBA": cls.img_dvm}

    def test_file_parses_under_the_documented_format(self):
        self.assertGreater(len(self.rules), 0)

    def test_converter_services_are_allowed_only_to_their_disposable_template(self):
        for rule in self.rules:
            if rule.service in CONVERTER_SERVICES and rule.action != "deny":
                effective = rule.params.get("target", rule.target)
                self.assertEqual(effective, "@dispvm:" + self.dvm[rule.service],
                                 f"line {rule.lineno}")

    def test_no_rule_allows_towards_anyvm(self):
        for rule in self.rules:
            if rule.action != "deny":
                self.assertNotEqual(rule.target, "@anyvm", f"line {rule.lineno}")

    def test_stock_client_asking_for_dispvm_is_redirected(self):
        self.assertEqual(
            evaluate(self.rules, "qubes.PdfConvert", "300", ("work", None), "@dispvm"),
            ("allow", "@dispvm:" + self.pdf_dvm))
        self.assertEqual(
            evaluate(self.rules, "qubes.GetImageRGBA", "", ("work", None), "@dispvm"),
            ("allow", "@dispvm:" + self.img_dvm))

    def test_naming_the_template_is_allowed(self):
        self.assertEqual(
            evaluate(self.rules, "qubes.PdfConvert", "150", ("work", None),
                     "@dispvm:" + self.pdf_dvm),
            ("allow", "@dispvm:" + self.pdf_dvm))

    def test_the_wrong_template_is_refused(self):
        self.assertEqual(
            evaluate(self.rules, "qubes.PdfConvert", "150", ("work", None),
                     "@dispvm:" + self.img_dvm)[0], "deny")

    def test_named_qubes_and_dom0_are_refused(self):
        for target in ("personal", "@default", "@dispvm:default-dvm", "@adminvm"):
            for service in CONVERTER_SERVICES:
                self.assertEqual(
                    evaluate(self.rules, service, "", ("work", None), target)[0], "deny",
                    f"{service} to {target}")

    def test_a_uvm_may_call_nothing(self):
        for dvm in (self.pdf_dvm, self.img_dvm):
            for service, target in (("qubes.OpenInVM", "@dispvm"),
                                    ("qubes.PdfConvert", "@dispvm"),
                                    ("qubes.Filecopy", "work"),
                                    ("qubes.NotifyUpdates", "@adminvm")):
                self.assertEqual(
                    evaluate(self.rules, service, "", ("disp1234", dvm), target)[0], "deny")
                self.assertEqual(
                    evaluate(self.rules, service, "", (dvm, None), target)[0], "deny")


class ParserTest(unittest.TestCase):
    """The checker itself rejects what qrexec would reject."""

    def test_anyvm_as_redirect_target_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert * @anyvm @dispvm allow target=@anyvm")

    def test_plain_dispvm_as_source_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert * @dispvm @anyvm deny")

    def test_argument_without_plus_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert 300 @anyvm @dispvm allow")

    def test_any_service_needs_any_argument(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "* +300 @anyvm @dispvm deny")

    def test_deny_with_target_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert * @anyvm @anyvm deny target=dom0")

    def test_unknown_action_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert * @anyvm @dispvm permit")

    def test_short_line_is_rejected(self):
        with self.assertRaises(PolicyError):
            parse_line(1, "qubes.PdfConvert * @anyvm @dispvm")

    def test_allow_to_anyvm_would_fail_the_file_check(self):
        rules = parse("qubes.PdfConvert * @anyvm @anyvm allow\n")
        self.assertEqual(evaluate(rules, "qubes.PdfConvert", "", ("work", None), "personal"),
                         ("allow", "personal"))
        self.assertEqual(rules[0].target, "@anyvm")


if __name__ == "__main__":
    unittest.main()
