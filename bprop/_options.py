"""Argument parsing shared by the ``bprop`` subcommands.

Every option's value is checked while the command line is parsed, before
any work: a bad value ends the command with one line on stderr,
``bprop train: error: --lr must be a positive finite number, got nan``, and
exit status 2, as argparse does for its own errors. An unknown flag shows
the usage of the subcommand it was given to.
"""
import argparse
import math
import os
import sys


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommands reject unknown flags with their own usage.

    ``add_subparsers`` makes its subparsers of this class too, so a
    subcommand added later gets the same behaviour.
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            _chosen(self, namespace).error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _chosen(parser, namespace):
    """The innermost subcommand's parser that ``namespace`` was parsed with (``parser`` itself if none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(namespace, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], namespace)
    return parser


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except for flags and options without one."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or default is None or default is False or default is argparse.SUPPRESS
                or not action.option_strings):
            return text
        if isinstance(default, (list, tuple)):
            return f"{text} (default: {','.join(map(str, default))})"
        return f"{text} (default: %(default)s)"


def fail(parser, message):
    """End the command with ``PROG: error: MESSAGE`` on stderr and exit status 2."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def _checked(parser, flag, convert, rule):
    """An argparse ``type`` that converts with ``convert`` and ends the command when ``rule`` fails."""
    def parse(text):
        try:
            value = convert(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not rule(value):
            fail(parser, f"{flag} must be {parse.wants}, got {text}")
        return value
    return parse


def positive_int(parser, flag):
    """An integer >= 1."""
    t = _checked(parser, flag, int, lambda v: v >= 1)
    t.wants = "a positive integer"
    return t


def seed(parser, flag):
    """A seed for ``np.random.seed``: 0 <= seed < 2**32."""
    t = _checked(parser, flag, int, lambda v: 0 <= v < 2 ** 32)
    t.wants = "an integer from 0 to 2**32 - 1"
    return t


def positive_float(parser, flag):
    """A finite number > 0 (not nan, not inf)."""
    t = _checked(parser, flag, float, lambda v: math.isfinite(v) and v > 0)
    t.wants = "a positive finite number"
    return t


def csv(parser, flag, choices):
    """A comma-separated list of items from ``choices``, duplicates dropped, order kept."""
    def parse(text):
        items = [s.strip().lower() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in choices]
        if bad or not items:
            fail(parser, f"{flag} takes a comma-separated list from {','.join(choices)}, got {text!r}"
                         + (f" (unknown: {', '.join(bad)})" if bad else ""))
        return list(dict.fromkeys(items))
    return parse


def output_file(parser, flag, suffixes=None):
    """A path the command will write: its folder must exist and be writable, and it must not be a folder.

    Checked at parse time so that a long run does not end by losing its
    results. ``suffixes``, when given, is a callable returning the file
    extensions that can be written (e.g. matplotlib's formats).
    """
    def parse(text):
        text = os.path.expanduser(text)  # "--json=~/r.json" reaches us unexpanded
        path = os.path.abspath(text)
        folder = os.path.dirname(path)
        problem = None
        if os.path.isdir(path):
            problem = "is a directory"
        elif not os.path.isdir(folder):
            problem = f"its directory {folder} does not exist"
        elif os.path.exists(path) and not os.access(path, os.W_OK):
            problem = "is not writable"
        elif not os.path.exists(path) and not os.access(folder, os.W_OK | os.X_OK):
            problem = f"its directory {folder} is not writable"
        if problem:
            fail(parser, f"{flag} {text}: {problem}")
        ext = os.path.splitext(path)[1].lstrip(".").lower()
        if suffixes is not None and ext:
            known = suffixes()
            if known is not None and ext not in known:
                fail(parser, f"{flag} {text}: cannot write .{ext} files; use one of "
                             f"{', '.join('.' + k for k in sorted(known))}")
        return text
    return parse


def directory(parser, flag):
    """A directory path: refused when something other than a directory is already there."""
    def parse(text):
        text = os.path.expanduser(text)
        if os.path.exists(text) and not os.path.isdir(text):
            fail(parser, f"{flag} {text}: is not a directory")
        return text
    return parse


def image_formats():
    """The file extensions matplotlib can write, or None when matplotlib does not import."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return set(Figure().canvas.get_supported_filetypes())


class Fail(Exception):
    """An error found while running a subcommand, reported as one line with exit status 2."""


def run(parser, argv=None):
    """Parse ``argv`` with ``parser`` and run the chosen handler (``args.func``); returns the exit status.

    A handler returns its exit status (``None`` means 0) or raises
    :class:`Fail`. Output into a pipe that closes early (``bprop info |
    head -1``) ends quietly.
    """
    args = parser.parse_args(argv)
    prog = getattr(args, "prog", None) or parser.prog
    try:
        status = args.func(args) or 0
        sys.stdout.flush()  # a closed pipe must fail here, not in the interpreter's exit
        return status
    except Fail as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:
        print(f"{prog}: error: out of memory{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whatever is still buffered cannot be written either: send it nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
