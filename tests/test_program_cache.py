"""filterviz's own store of compiled programs: a later session loads what an earlier one compiled, and
nothing it did not write (a truncated, damaged, foreign or other-version file is compiled afresh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from filterviz.io import programs


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The store turned on in a folder of its own, and a count of the programs XLA compiles."""
    folder = tmp_path / "programs"
    monkeypatch.setenv("FILTERVIZ_PROGRAM_CACHE", str(folder))
    compiled: list[int] = []
    real = jax.stages.Lowered.compile

    def counted(self, *args, **kwargs):
        compiled.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(jax.stages.Lowered, "compile", counted)
    # The suite keeps every program in JAX's own cache, which the store steps aside for: off here.
    from jax.experimental.compilation_cache import compilation_cache

    jax_cache = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    yield folder, compiled
    jax.config.update("jax_compilation_cache_dir", jax_cache)
    compilation_cache.reset_cache()  # taken up again, from the setting, at the next compile


def session():
    """A new session's view of one program: a fresh wrapper, so nothing is remembered in memory."""

    @jax.jit
    def affine(x: jax.Array) -> jax.Array:
        return jnp.tanh(x) * 3.0 + 1.0

    return programs.kept(affine)


X = np.linspace(-2, 2, 12, dtype=np.float32)
EXPECTED = np.tanh(X) * 3.0 + 1.0


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"*{programs.SUFFIX}"))


def test_a_later_session_loads_the_program_instead_of_compiling(store):
    folder, compiled = store
    np.testing.assert_allclose(session()(X), EXPECTED, rtol=1e-6)
    assert len(compiled) == 1 and len(entries(folder)) == 1
    np.testing.assert_allclose(session()(X), EXPECTED, rtol=1e-6)
    assert len(compiled) == 1  # loaded
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    assert oct((folder / programs.KEY_FILE).stat().st_mode & 0o777) == "0o600"
    # Another shape is another program, kept beside the first.
    session()(X[:5])
    assert len(compiled) == 2 and len(entries(folder)) == 2


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),  # truncated
        lambda path: path.write_bytes(b""),  # emptied
        flip_last_byte,  # one byte of the program changed
        lambda path: path.write_bytes(b"\x80\x04garbage" * 100),  # not ours at all
    ],
    ids=["truncated", "empty", "one-byte-changed", "garbage"],
)
def test_a_damaged_entry_is_compiled_afresh_and_replaced(store, damage):
    folder, compiled = store
    session()(X)
    (entry,) = entries(folder)
    damage(entry)
    np.testing.assert_allclose(session()(X), EXPECTED, rtol=1e-6)
    assert len(compiled) == 2  # not loaded: compiled again
    session()(X)
    assert len(compiled) == 2  # and the entry written again is whole


def test_an_entry_from_another_folder_or_jax_version_is_never_loaded(store, tmp_path, monkeypatch):
    folder, compiled = store
    # Written by another store (another key): copied over this one's entry, it is not trusted.
    monkeypatch.setenv("FILTERVIZ_PROGRAM_CACHE", str(tmp_path / "elsewhere"))
    session()(X)
    (foreign,) = entries(tmp_path / "elsewhere")
    monkeypatch.setenv("FILTERVIZ_PROGRAM_CACHE", str(folder))
    folder.mkdir(mode=0o700)
    (folder / foreign.name).write_bytes(foreign.read_bytes())
    session()(X)
    assert len(compiled) == 2
    # Written under another JAX version: a name of its own, never this version's program.
    with monkeypatch.context() as other_version:
        other_version.setattr(jax, "__version__", "0.0.1")
        session()(X)
    assert len(compiled) == 3 and len(entries(folder)) == 2
    session()(X)
    assert len(compiled) == 3  # this version's own entry, loaded
    heads = [path.read_bytes().partition(b"\n\n")[0][len(programs.MAGIC) :] for path in entries(folder)]
    assert sorted(json.loads(head)["jax"] for head in heads) == sorted(["0.0.1", jax.__version__])


def test_the_store_keeps_under_its_limit_and_drops_only_its_own_files(store, monkeypatch):
    folder, _ = store
    session()(X)
    size = entries(folder)[0].stat().st_size
    (folder / "notes.txt").write_text("the user's own file")
    monkeypatch.setenv("FILTERVIZ_PROGRAM_CACHE_MB", str(2.5 * size / 2**20))  # room for two entries
    for count in range(3, 7):
        session()(X[:count])
    assert len(entries(folder)) == 2
    assert (folder / "notes.txt").read_text() == "the user's own file"
    assert not list(folder.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("how", ["off", "jax-cache-on", "jax-cache-used", "shared-folder"])
def test_the_store_steps_aside_when_off_when_jax_keeps_programs_or_when_others_can_write(
    store, monkeypatch, how
):
    folder, compiled = store
    if how == "off":
        monkeypatch.setenv("FILTERVIZ_PROGRAM_CACHE", "off")
    elif how == "jax-cache-on":
        jax.config.update("jax_compilation_cache_dir", str(folder.parent / "xla"))  # the fixture restores it
    elif how == "jax-cache-used":  # set before, then unset: JAX's cache may still answer in this process
        jax.config.update("jax_compilation_cache_dir", str(folder.parent / "xla"))
        jax.numpy.sin(jax.numpy.arange(3.0))  # a compile takes it up
        jax.config.update("jax_compilation_cache_dir", None)
    else:
        folder.mkdir(mode=0o777)
        folder.chmod(0o777)  # a folder others can write: its files cannot be trusted
    np.testing.assert_allclose(session()(X), EXPECTED, rtol=1e-6)
    assert compiled == [] and not entries(folder)  # jit's own path: nothing lowered by the store


LATER_SESSION = """
import json, logging, sys
import jax, numpy as np, filterviz
params = filterviz.network("vgg16").init(jax.random.key(0))
names = []
handler = logging.Handler()
handler.emit = lambda record: names.append(record.getMessage())
logging.getLogger("jax").addHandler(handler)
with jax.log_compiles(True):
    done = filterviz.render(params, filterviz.channel("block1_conv2", [0, 1]), method="notebook", size=16,
                            steps=2, progress=False)
compiled = [m for m in names if m.startswith("Finished XLA compilation") and "render_and_measure" in m]
np.save(sys.argv[1], np.asarray(done.pixels))
print(json.dumps({"main_compiled": len(compiled)}))
"""


def test_a_later_process_draws_the_same_pictures_without_compiling_the_ascent(tmp_path):
    environment = {**os.environ, "FILTERVIZ_PROGRAM_CACHE": str(tmp_path / "programs")}
    reports = []
    for run in ("first", "later"):
        done = subprocess.run(
            [sys.executable, "-c", LATER_SESSION, str(tmp_path / f"{run}.npy")],
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        reports.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert [report["main_compiled"] for report in reports] == [1, 0]
    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "later.npy"))
