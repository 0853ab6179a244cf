"""The code's shape: the import graph of triton_lstm/ and kernels/ has no cycle (function-local
imports included), no module uses another module's _private names, host files stay short,
and kernel files import only the shared device helpers."""
import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_HOST_LINES = 450


def package_modules() -> dict[str, pathlib.Path]:
    """Module name -> file for the installed package (kernels/ installs as triton_lstm.kernels)."""
    modules = {}
    for folder, package in ((REPO / "triton_lstm", "triton_lstm"), (REPO / "kernels", "triton_lstm.kernels")):
        for path in sorted(folder.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: pathlib.Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every import anywhere in the file."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path.stem == "__init__", node)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.append((f"{target}.{alias.name}", None, node.lineno))  # a submodule
                else:
                    found.append((target, alias.name, node.lineno))
    return found


def test_import_graph_has_no_cycle():
    modules = package_modules()
    known = set(modules)
    graph = {m: sorted({target for target, _, _ in imports_of(m, p, known) if target in known and target != m})
             for m, p in modules.items()}
    assert "triton_lstm.variants" in graph["triton_lstm.launcher"]  # the graph is really read
    done, cycles = set(), []

    def visit(m, path):
        for n in graph[m]:
            if n in path:
                cycles.append(path[path.index(n):] + [n])
            elif n not in done:
                visit(n, path + [n])
        done.add(m)

    for m in graph:
        if m not in done:
            visit(m, [m])
    assert not cycles, cycles


def test_no_module_uses_another_modules_private_names():
    # package modules, perf/ and the tests: what two of them share is public
    files = dict(package_modules())
    files.update({f"tests.{p.stem}": p for p in (REPO / "tests").glob("*.py")})
    files.update({f"perf.{p.stem}": p for p in (REPO / "perf").glob("*.py") if p.stem != "__init__"})
    known = set(files)
    offences = []
    for module, path in files.items():
        aliases = {}  # local name -> the internal module it is bound to
        for target, name, line in imports_of(module, path, known):
            if name is None and target in known:
                aliases[target.rsplit(".", 1)[-1]] = target
            elif target in known and name.startswith("_"):
                offences.append(f"{path.name}:{line} imports {target}.{name}")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in known})
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and aliases[node.value.id] != module and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                offences.append(f"{path.name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not offences, "\n".join(offences)


def test_host_files_stay_under_450_lines():
    long = {p.name: n for p in (REPO / "triton_lstm").glob("*.py") if (n := len(p.read_text().splitlines())) >
            MAX_HOST_LINES}
    assert not long, long


def test_kernel_files_import_only_triton_and_the_shared_helpers():
    modules = package_modules()
    known = set(modules)
    kernel_files = {m: p for m, p in modules.items() if m.startswith("triton_lstm.kernels.")}
    helper_modules = {m for m in kernel_files if m.endswith(("helpers", "gates"))}
    for module, path in kernel_files.items():
        for target, _, line in imports_of(module, path, known):
            assert target.startswith("triton") and (not target.startswith("triton_lstm") or target in helper_modules), \
                f"{path.name}:{line} imports {target}"
