"""The ``gmcore`` command line: ``gmcore info``, ``gmcore kernels`` (and ``python -m gmcore ...``).

Subcommands live in :data:`COMMANDS`; add one with :func:`command`::

    @command("demo", help="train a tiny MLP with autograd")
    def _demo(args): ...

Probing optional parts (cupy, triton, numba, torch, gmcore._C) happens only when ``info`` runs,
never at ``import gmcore``.

Errors: a command raises :class:`CLIError` (or lets one of :func:`user_errors` through) and
:func:`main` prints ``gmcore <command>: <message>`` on one line, exit status 1 (2 for bad
usage); a bad flag prints the message and ``see 'gmcore ... --help'``, not the usage block.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import sys
from dataclasses import dataclass
from typing import Callable


class CLIError(Exception):
    """A failure the user can fix (a flag, a file, the machine): reported as one line
    ``gmcore <command>: <message>`` with exit status ``status`` (2: bad usage, 1: anything else)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in two lines (the message, where help is) instead of
    the whole usage block, which buries the message under twenty lines of flags."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help'\n")


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input or an unusable environment, never a gmcore bug:
    :func:`main` prints them in one line instead of a traceback. Each names its file, flag or
    device (the project's own types are raised where the problem is found)."""
    from .configs import ConfigError
    from .dispatch import KernelUnavailable
    from .io import CheckpointError

    # ValueError: configs, data sets and run folders report bad values with it; OSError: files
    # (missing, unreadable, disk full); ImportError: an optional extra that is not installed.
    return (CLIError, ConfigError, CheckpointError, KernelUnavailable, FloatingPointError, ValueError,
            OSError, ImportError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a state_dict error lists one key per line)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    for ln in lines[1:]:
        text += (" " if text.endswith(":") else "; ") + ln
    return text


@dataclass
class Command:
    name: str
    help: str
    run: Callable[[argparse.Namespace], int | None]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # a command whose flags depend on its input (``gmcore sample RUN`` takes the run's model's
    # sampling options) gets the flags argparse does not know in ``args.extra`` and prints its
    # own --help
    extra_flags: bool = False


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments=None, extra_flags: bool = False):
    """Decorator registering ``run(args) -> exit code`` as subcommand ``name``."""

    def deco(run):
        COMMANDS[name] = Command(name, help, run, add_arguments, extra_flags)
        return run

    return deco


# ---- probes (cheap: metadata first, imports only where a count needs them) ------------------

def _dist_version(*dists: str) -> str | None:
    for d in dists:
        try:
            return importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _probe_module(module: str, *dists: str) -> str:
    """'<version>' when ``module`` is importable (found without importing it), else 'not installed'."""
    if importlib.util.find_spec(module) is None:
        return "not installed"
    return _dist_version(*dists) or "present (version unknown)"


def _probe_cupy() -> tuple[str, list[str]]:
    if importlib.util.find_spec("cupy") is None:
        return "not installed", []
    try:
        import cupy as cp
    except Exception as exc:
        return f"installed but fails to import ({type(exc).__name__}: {exc})", []
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"{cp.__version__}, no usable GPU ({type(exc).__name__})", []
    names = []
    for i in range(n):
        try:
            props = cp.cuda.runtime.getDeviceProperties(i)
            name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        except Exception:
            name = "?"
        names.append(f"cuda:{i}  {name}")
    return f"{cp.__version__}, {n} GPU(s) visible", names


def _probe_C() -> str:
    try:
        from gmcore import _C
    except ImportError as exc:
        return f"not built ({exc})"
    cuda = f"CUDA: built in, {_C.cuda_device_count()} device(s) visible" if _C.has_cuda else "CUDA: not built"
    omp = "OpenMP: yes" if getattr(_C, "has_openmp", False) else "OpenMP: no"
    return f"present ({omp}; {cuda})"


def _gmcore_version() -> str:
    v = _dist_version("gmcore")
    if v:
        return v
    import gmcore

    return getattr(gmcore, "__version__", "unknown")


@command("info", help="versions, optional parts and devices")
def _info(args: argparse.Namespace) -> int:
    import numpy as np

    print(f"gmcore   {_gmcore_version()}")
    print(f"python   {platform.python_version()} ({sys.executable})")
    print(f"numpy    {np.__version__}")
    print()
    print("optional parts:")
    cupy_desc, gpus = _probe_cupy()
    parts = [
        ("_C", _probe_C()),
        ("cupy", cupy_desc),
        ("triton", _probe_module("triton", "triton")),
        ("numba", _probe_module("numba", "numba")),
        ("torch", _probe_module("torch", "torch")),
    ]
    for name, desc in parts:
        print(f"  {name:<8} {desc}")
    print()
    print("training extras (pip install 'gmcore[train]'):")
    for name, module, dist in (("safetensors", "safetensors", "safetensors"), ("tqdm", "tqdm", "tqdm"),
                               ("matplotlib", "matplotlib", "matplotlib"), ("Pillow", "PIL", "Pillow")):
        print(f"  {name:<11} {_probe_module(module, dist)}")
    print()
    print("devices:")
    print("  cpu")
    for g in gpus:
        print(f"  {g}")
    return 0


@command("kernels", help="kernel dispatch table: implementations, availability, active choice")
def _kernels(args: argparse.Namespace) -> int:
    from gmcore import dispatch

    print(dispatch.format_table())
    return 0


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=300, help="SGD steps (default 300)")
    p.add_argument("--hidden", type=int, default=64, help="hidden width (default 64)")
    p.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


@command("demo", help="worked example: train a 2-layer MLP on generated two-moons data",
         add_arguments=_demo_arguments)
def _demo(args: argparse.Namespace) -> int:
    from gmcore import demo

    if args.steps < 1 or args.hidden < 1 or args.lr <= 0:
        print("gmcore demo: --steps and --hidden must be >= 1 and --lr > 0", file=sys.stderr)
        return 2
    demo.run(steps=args.steps, hidden=args.hidden, lr=args.lr, seed=args.seed)
    return 0


def _selftest_arguments(p: argparse.ArgumentParser) -> None:
    from . import selftest

    selftest.add_arguments(p)


@command("selftest", help="check this installation: every kernel against its reference, tiny "
         "model training, optional benchmarks", add_arguments=_selftest_arguments)
def _selftest(args: argparse.Namespace) -> int:
    from . import selftest

    return selftest.main(args)


from . import cli_train  # noqa: E402,F401  (registers train, sample, eval, models, and edit)
from . import cli_runs  # noqa: E402,F401  (registers runs and report)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="gmcore", description="gmcore: autodiff tensor engine with hand-written kernels")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, add_help=not cmd.extra_flags)
        if cmd.add_arguments is not None:
            cmd.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; bad input and unusable environments end in one line on stderr
    (``gmcore <command>: <message>``) and a non-zero status, never a traceback."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not (args.command and COMMANDS[args.command].extra_flags):
        parser.parse_args(argv)  # the usual error naming the unrecognized flags
    args.extra = extra
    if args.command is None:
        parser.print_help()
        return 2
    from .configs import ConfigError

    from .progress import show_progress

    try:
        # long samplers (pixel by pixel, diffusion chains, Langevin) draw a bar on stderr
        with show_progress(args.command in ("sample", "edit", "dream", "eval")):
            rc = COMMANDS[args.command].run(args)
    except user_errors() as exc:
        print(f"gmcore {args.command}: {one_line(exc)}", file=sys.stderr)
        return getattr(exc, "status", 2 if isinstance(exc, ConfigError) else 1)
    except KeyboardInterrupt:  # sample / eval (train saves a checkpoint and returns 130 itself)
        print(f"gmcore {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)


if __name__ == "__main__":
    sys.exit(main())
