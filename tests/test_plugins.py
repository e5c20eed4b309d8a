"""Backend discovery through pluggy and the stiffcore.backends entry-point group."""

import textwrap

import numpy as np
import pytest

import stiffcore
from stiffcore.plugins import Backend, discover_backends, hookimpl, install, plugin_manager, select_backends

TOY_MODULE = textwrap.dedent('''
    import numpy as np
    from stiffcore.plugins import Backend, hookimpl

    INSTALLED = []

    def _grad(method_id, z, h, y0):
        # finite differences of backward Euler's map: a real (if crude) differentiation
        lam = np.asarray(z) / h
        eps = 1e-7 * np.abs(lam)
        y1 = lambda l: y0 / (1 - h * l)
        return (y1(lam + eps) - y1(lam - eps)) / (2 * eps)

    @hookimpl
    def stiffcore_backend():
        return Backend(name="toy", methods=("backward_euler",), one_step_gradient=_grad,
                       install=lambda: INSTALLED.append("toy"), description="entry-point toy")
''')


@pytest.fixture
def toy_distribution(tmp_path, monkeypatch):
    """A real installed distribution (dist-info with an entry point) on sys.path."""
    (tmp_path / "toy_stiffcore_backend.py").write_text(TOY_MODULE)
    info = tmp_path / "toy_stiffcore_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-stiffcore-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stiffcore.backends]\ntoy = toy_stiffcore_backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    sys.modules.pop("toy_stiffcore_backend", None)


def test_entry_point_backend_is_discovered_and_installed(toy_distribution):
    found = discover_backends()
    assert "toy" in found
    toy = found["toy"]
    assert toy.available and toy.methods == ("backward_euler",)
    z = -np.logspace(-2, 2, 5)
    expected = stiffcore.one_step_gradient("backward_euler", z, h=1.0)
    np.testing.assert_allclose(toy.one_step_gradient("backward_euler", z, 1.0, 1.0), expected, rtol=1e-6)
    assert "toy" in install(["toy"])
    import toy_stiffcore_backend

    assert toy_stiffcore_backend.INSTALLED == ["toy"]


def test_an_entry_point_whose_framework_is_missing_does_not_break_discovery(tmp_path, monkeypatch):
    """Loading a backend's entry point imports its adapter, hence its framework; without it,
    discovery still finds the others and reports this one unavailable with the error."""
    (tmp_path / "broken_stiffcore_backend.py").write_text("import no_such_framework_xyz\n")
    info = tmp_path / "broken_stiffcore_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-stiffcore-backend\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stiffcore.backends]\nbroken = broken_stiffcore_backend\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover_backends()
    assert "scipy" in found and found["scipy"].available
    broken = found["broken"]
    assert not broken.available and "no_such_framework_xyz" in broken.load_error
    assert "broken" not in [b.name for b in select_backends(None, found)]
    with pytest.raises(ValueError, match="could not be loaded: ModuleNotFoundError.*no_such_framework_xyz"):
        select_backends(["broken"], found)
    with pytest.raises(RuntimeError, match="could not be loaded"):
        broken.one_step_gradient("backward_euler", -1.0, 1.0, 1.0)


class _Plugin:
    def __init__(self, backend):
        self.backend = backend

    @hookimpl
    def stiffcore_backend(self):
        return self.backend


def _manager(*backends):
    pm = plugin_manager(load_entry_points=False)
    for b in backends:
        pm.register(_Plugin(b))
    return pm


def _backend(name, **kw):
    return Backend(name=name, methods=("radau_iia5",), one_step_gradient=lambda *a: None, **kw)


def test_install_skips_unavailable_and_refuses_unknown():
    calls = []
    pm = _manager(_backend("ok", install=lambda: calls.append("ok")),
                  _backend("missing", requires=("no_such_module_xyz",), install=lambda: calls.append("missing")))
    assert install(pm=pm) == ["ok"]
    assert calls == ["ok"]
    with pytest.raises(ValueError, match="needs no_such_module_xyz"):
        install(["missing"], pm=pm)
    with pytest.raises(ValueError, match="unknown backend 'nope'; installed backends: missing, ok"):
        install(["nope"], pm=pm)


def test_duplicate_names_and_bad_returns_are_errors():
    with pytest.raises(ValueError, match="two plugins announce a backend named 'a'"):
        discover_backends(_manager(_backend("a"), _backend("a")))

    class Bad:
        @hookimpl
        def stiffcore_backend(self):
            return {"name": "dict"}

    pm = plugin_manager(load_entry_points=False)
    pm.register(Bad())
    with pytest.raises(TypeError, match="must return a Backend"):
        discover_backends(pm)


def test_backend_with_unknown_method_id_is_refused():
    with pytest.raises(ValueError, match="unknown method 'radau5'"):
        Backend(name="x", methods=("radau5",), one_step_gradient=lambda *a: None)


def test_discovering_the_shipped_backends_imports_no_framework():
    """Loading the four entry points imported torch and JAX (10 s for `stiffcore backends`);
    the announcements are LazyHooks now, and the first call imports the adapter."""
    import subprocess
    import sys

    code = ("import sys, stiffcore\n"
            "found = stiffcore.discover_backends()\n"
            "print(sorted(found), [m for m in ('scipy', 'torch', 'jax', 'diffrax') if m in sys.modules])\n"
            "print(found['scipy'].one_step_gradient('backward_euler', [-1.0], 1.0, 1.0), 'scipy' in sys.modules)\n")
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert lines[0] == "['diffrax', 'jax', 'scipy', 'torch'] []"
    assert lines[1] == "[0.25] True"  # d/dlambda of 1 / (1 - h lambda) at h lambda = -1


def test_a_lazy_hook_imports_its_module_on_the_first_call():
    from stiffcore.plugins import Announcement, LazyHook

    hook = LazyHook("json", "dumps")
    assert hook([1]) == "[1]"
    backend = Backend(name="lazy", methods=("backward_euler",), one_step_gradient=LazyHook("json", "no_such_hook"))
    pm = plugin_manager(load_entry_points=False)
    pm.register(Announcement(backend))
    with pytest.raises(AttributeError, match="no_such_hook"):
        discover_backends(pm)["lazy"].one_step_gradient("backward_euler", [-1.0], 1.0, 1.0)
    # a framework that is installed but fails to import is named, not a bare ImportError
    with pytest.raises(RuntimeError, match=r"no_such_package_xyz.hooks could not be imported for its hook "
                                           r"'one_step_gradient': ModuleNotFoundError"):
        LazyHook("no_such_package_xyz.hooks", "one_step_gradient")("backward_euler", [-1.0], 1.0, 1.0)
