"""Layering (issue 13): ``kernels/`` holds array-level kernels and their helpers; it may import
``gmcore`` plumbing (backend, dispatch, _C) but never ``gmcore.functional``, the layer of
differentiable ops built on top of it."""
import ast
import pathlib

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"
FORBIDDEN = "gmcore.functional"


def _imports(tree):
    """Every absolute module name an ``import`` / ``from ... import`` statement names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: kernels/x.py is gmcore/kernels/x.py once installed
                yield node.lineno, None, node
                continue
            yield node.lineno, node.module or ""
            if node.module == "gmcore":  # ``from gmcore import functional``
                for alias in node.names:
                    yield node.lineno, f"gmcore.{alias.name}"


def _relative_target(path, node):
    """The absolute name a relative import resolves to, with kernels/ mounted at gmcore.kernels."""
    parts = ["gmcore", "kernels", *path.relative_to(KERNELS).with_suffix("").parts]
    base = parts[:len(parts) - node.level]  # level 1: the module's own package
    names = [node.module] if node.module else [a.name for a in node.names]
    return [".".join(base + [n]) for n in names]


def test_kernels_never_import_gmcore_functional():
    files = sorted(KERNELS.rglob("*.py"))
    assert len(files) > 5, f"no kernel sources found under {KERNELS}"
    bad = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        for item in _imports(tree):
            names = _relative_target(path, item[2]) if item[1] is None else [item[1]]
            for name in names:
                if name == FORBIDDEN or name.startswith(FORBIDDEN + "."):
                    bad.append(f"{path.relative_to(KERNELS.parent)}:{item[0]} imports {name}")
    assert not bad, "kernels/ must not import gmcore.functional:\n" + "\n".join(bad)


def test_the_scan_sees_a_violation(tmp_path):
    """The checker itself: each spelling of the forbidden import is caught."""
    for src in ("import gmcore.functional.vq\n", "from gmcore.functional import vq\n",
                "from gmcore import functional\n", "from gmcore.functional._x import y\n"):
        tree = ast.parse(src)
        names = [i[1] for i in _imports(tree)]
        assert any(n == FORBIDDEN or n.startswith(FORBIDDEN + ".") for n in names), src
    # a relative import from kernels/numba/x.py: ``from ...functional import vq``
    node = ast.parse("from ...functional import vq\n").body[0]
    assert _relative_target(KERNELS / "numba" / "x.py", node) == ["gmcore.functional"]
