"""Finding libdnngov_client.so: the order of the places tried and the error that names
them."""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys

import pytest

import dnngov
from dnngov import _library


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No library anywhere but where a test puts one: no $DNNGOV_LIB, install prefixes
    that are empty folders, nothing through the loader, no development tree."""
    monkeypatch.delenv("DNNGOV_LIB", raising=False)
    prefixes = (str(tmp_path / "usr-local"), str(tmp_path / "usr"))
    monkeypatch.setattr(_library, "INSTALL_PREFIXES", prefixes)
    monkeypatch.setattr(_library, "LIBRARY_NAME", "libdnngov_client_absent.so")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(_library, "_development_trees", lambda: [])
    return prefixes


def real_library() -> str:
    return dnngov.library_path()


def test_the_library_in_use_is_dnngov_lib_or_one_of_the_places_searched():
    wanted = os.environ.get("DNNGOV_LIB")
    if wanted:
        assert dnngov.library_path() == wanted
    else:
        assert dnngov.library_path() in [path for _, path in _library.candidates()]


def test_dnngov_lib_comes_first_then_the_path_given(monkeypatch):
    monkeypatch.setenv("DNNGOV_LIB", "/from/env/libdnngov_client.so")
    places = _library.candidates("/given/libdnngov_client.so")
    assert places[0] == ("$DNNGOV_LIB", "/from/env/libdnngov_client.so")
    assert places[1] == ("the path given", "/given/libdnngov_client.so")
    paths = [path for _, path in places]
    assert paths.index("/usr/local/lib/libdnngov_client.so") < paths.index(
        "/usr/lib/libdnngov_client.so") < paths.index("libdnngov_client.so")


def test_a_dnngov_lib_that_cannot_load_is_an_error_naming_it(monkeypatch, tmp_path):
    bad = str(tmp_path / "missing" / "libdnngov_client.so")
    monkeypatch.setenv("DNNGOV_LIB", bad)
    with pytest.raises(dnngov.LibraryNotFound) as error:
        _library.load_library()
    message = str(error.value)
    assert bad in message
    assert "DNNGOV_LIB" in message
    assert "No such file" in message


def test_a_dnngov_lib_that_is_not_a_library_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    # A real library is reachable through the path given: it must not be used instead.
    fake = tmp_path / "libdnngov_client.so"
    fake.write_text("not an ELF file\n")
    monkeypatch.setenv("DNNGOV_LIB", str(fake))
    with pytest.raises(dnngov.LibraryNotFound, match="DNNGOV_LIB"):
        _library.load_library(real_library())


def test_the_path_given_is_used_when_dnngov_lib_is_unset(nowhere):
    lib, path = _library.load_library(real_library())
    assert path == real_library()
    assert hasattr(lib, "dnngov_register")


def test_the_library_under_an_install_prefix_is_found(nowhere):
    libdir = os.path.join(nowhere[1], "lib")
    os.makedirs(libdir)
    installed = os.path.join(libdir, _library.LIBRARY_NAME)
    shutil.copy(real_library(), installed)
    assert _library.load_library()[1] == installed


def test_a_development_trees_build_is_found_release_first(nowhere, monkeypatch, tmp_path):
    root = tmp_path / "clone"
    for profile in ("release", "debug"):
        (root / "target" / profile).mkdir(parents=True)
        shutil.copy(real_library(), str(root / "target" / profile / _library.LIBRARY_NAME))
    monkeypatch.setattr(_library, "_development_trees", lambda: [str(root)])
    assert _library.load_library()[1] == str(root / "target" / "release" / _library.LIBRARY_NAME)


def test_a_clone_is_recognised_from_the_current_directory(monkeypatch, tmp_path):
    root = tmp_path / "clone"
    (root / "client" / "python").mkdir(parents=True)
    (root / "Cargo.toml").write_text("[workspace]\n")
    (root / "client" / "python" / "pyproject.toml").write_text("[project]\n")
    (root / "examples").mkdir()
    monkeypatch.chdir(root / "examples")
    assert os.path.realpath(str(root)) in [os.path.realpath(r) for r in _library._development_trees()]


def test_when_nothing_loads_the_error_names_every_place_and_the_fixes(nowhere):
    with pytest.raises(dnngov.LibraryNotFound) as error:
        _library.load_library()
    message = str(error.value)
    for place in nowhere:
        assert os.path.join(place, "lib", "libdnngov_client_absent.so") in message
    assert "beside the package" in message
    assert "dynamic loader" in message
    assert "install.sh" in message
    assert "DNNGOV_LIB" in message
    # A LibraryNotFound is a DnngovError, which callers already catch.
    assert isinstance(error.value, dnngov.DnngovError)


def test_a_second_library_in_one_process_is_refused(no_agent, tmp_path):
    in_use = dnngov.library_path()
    assert dnngov.library_path(in_use) == in_use  # the same one again is fine
    other = str(tmp_path / "libdnngov_client.so")
    shutil.copy(in_use, other)
    with pytest.raises(dnngov.DnngovError, match="already uses"):
        dnngov.register("py-second-library", [(0, "only", 70.0)], deadline_ms=20.0,
                        library=other)


def test_import_needs_no_library_and_registering_names_the_bad_path(tmp_path):
    bad = str(tmp_path / "nowhere" / "libdnngov_client.so")
    code = ("import dnngov\n"
            "try:\n"
            "    dnngov.register('py-bad-lib', [(0, 'only', 70.0)], deadline_ms=20.0)\n"
            "except dnngov.LibraryNotFound as e:\n"
            "    print(e)\n"
            "else:\n"
            "    raise SystemExit('registered without a library')\n")
    env = dict(os.environ, DNNGOV_LIB=bad)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert bad in result.stdout and "DNNGOV_LIB" in result.stdout
