"""jaxhep.io: fitted posteriors and other pytrees survive save and load; bad files and
mismatched templates give clear errors, and nothing is overwritten by mistake."""

import dataclasses
import json
import os
import warnings
import zipfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhep import simulators
from jaxhep.densities import nsf
from jaxhep.io import VERSION, load, save
from jaxhep.sbi import FMPE, NPE, Posterior
from jaxhep.training import History

TINY = dict(num_transforms=2, hidden_features=16, batch_size=100, max_epochs=2, progress=False)


@pytest.fixture(scope="module")
def moons():
    # two_moons has a bounded (uniform) prior, so the posterior carries a support bijection.
    task = simulators.get_task("two_moons")
    theta, x = task.simulate(jax.random.key(0), 600)
    return task, theta, x


def _same_posterior(a, b, theta, x):
    np.testing.assert_array_equal(np.asarray(a.log_prob(theta, x)), np.asarray(b.log_prob(theta, x)))
    key = jax.random.key(5)
    np.testing.assert_array_equal(np.asarray(a.sample(key, x[0], (50,))), np.asarray(b.sample(key, x[0], (50,))))


@pytest.mark.parametrize("estimator", [NPE(**TINY),
                                       FMPE(max_epochs=1, batch_size=100, hidden_features=16, num_layers=1, progress=False)],
                         ids=["npe", "fmpe"])
def test_fitted_posterior_round_trips(tmp_path, moons, estimator):
    task, theta, x = moons
    posterior = estimator.fit(jax.random.key(1), theta, x, prior=task.prior)
    before = jax.tree_util.tree_map(np.array, eqx.filter(posterior, eqx.is_array))
    path = save(tmp_path / "post.jaxhep", posterior)
    loaded = load(path)
    assert isinstance(loaded, Posterior) and type(loaded.estimator) is type(posterior.estimator)
    assert loaded.history.epochs == posterior.history.epochs
    np.testing.assert_array_equal(loaded.history.val_loss, posterior.history.val_loss)
    _same_posterior(posterior, loaded, theta[:20], x[:20])
    # The loaded posterior jits and vmaps like the original.
    many = jax.jit(jax.vmap(lambda k, xo: loaded.sample(k, xo, (10,))))(jax.random.split(jax.random.key(2), 3), x[:3])
    assert many.shape == (3, 10, 2)
    # Saving changed nothing in the object.
    after = jax.tree_util.tree_map(np.array, eqx.filter(posterior, eqx.is_array))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, before, after))


def test_load_into_a_template_reads_arrays_only(tmp_path, moons):
    task, theta, x = moons
    posterior = NPE(**TINY).fit(jax.random.key(1), theta, x, prior=task.prior)
    # A template of the same structure with other values (as a fit with another key would give).
    template = jax.tree_util.tree_map(lambda a: a + 0.5 if eqx.is_inexact_array(a) else a, posterior)
    template_lp = np.asarray(template.log_prob(theta[:5], x[:5]))
    assert not np.allclose(template_lp, posterior.log_prob(theta[:5], x[:5]))
    save(tmp_path / "p", posterior)
    # No unpickling on this path: a file whose skeleton is garbage still loads into the template.
    with zipfile.ZipFile(tmp_path / "p") as zin, zipfile.ZipFile(tmp_path / "q", "w") as zout:
        for item in zin.namelist():
            zout.writestr(item, b"not a pickle" if item == "skeleton.pkl" else zin.read(item))
    loaded = load(tmp_path / "q", like=template)
    _same_posterior(posterior, loaded, theta[:20], x[:20])
    np.testing.assert_array_equal(np.asarray(template.log_prob(theta[:5], x[:5])), template_lp)  # unchanged
    with pytest.raises(ValueError, match="cannot rebuild the jaxhep.sbi.base.Posterior .*like="):
        load(tmp_path / "q")
    # A template with an array of another shape is refused, naming that array.
    other = eqx.tree_at(lambda p: p.estimator.x_loc, posterior, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"like\.estimator\.x_loc has shape \(3,\) and dtype float32, but the "
                                         r"file holds shape \(2,\)"):
        load(tmp_path / "p", like=other)
    with pytest.raises(ValueError, match="holds .* arrays but like= has 1"):
        load(tmp_path / "p", like={"w": jnp.zeros(3)})
    # Arrays that fit but settings that differ (here the activation): loaded, with a warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Run facts of the history (here its seconds) do not count as settings.
        later = dataclasses.replace(template.history, seconds=template.history.seconds + 1.0)
        load(tmp_path / "p", like=eqx.tree_at(lambda p: p.history, template, later))
        # A template whose fit ran another number of epochs (as early stopping makes likely): the
        # loaded history is the saved run, losses and run facts (it failed on the loss shapes).
        shorter = History(template.history.train_loss[:1], template.history.val_loss[:1], best_epoch=0, epochs=1,
                          stopped_early=False, seconds=0.0, lr_scale=template.history.lr_scale[:1])
        loaded = load(tmp_path / "p", like=eqx.tree_at(lambda p: p.history, template, shorter))
    for field in ("best_epoch", "epochs", "stopped_early", "seconds"):
        assert getattr(loaded.history, field) == getattr(posterior.history, field)
    np.testing.assert_array_equal(loaded.history.train_loss, posterior.history.train_loss)
    assert posterior.history.epochs > 1
    # A file from before the run facts were saved: the losses load, with a warning.
    with zipfile.ZipFile(tmp_path / "p") as zin, zipfile.ZipFile(tmp_path / "old", "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "header.json":
                header = json.loads(data)
                del header["histories"]
                data = json.dumps(header)
            zout.writestr(item, data)
    with pytest.warns(UserWarning, match="predates the saving of a history's run facts"):
        old = load(tmp_path / "old", like=eqx.tree_at(lambda p: p.history, template, shorter))
    np.testing.assert_array_equal(old.history.train_loss, posterior.history.train_loss)
    relu = NPE(**(TINY | dict(activation="relu"))).build(jax.random.key(0), 2, 2)
    tanh = NPE(**(TINY | dict(activation="tanh"))).build(jax.random.key(0), 2, 2)
    save(tmp_path / "relu", relu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same settings, other values: no warning
        load(tmp_path / "relu", like=NPE(**(TINY | dict(activation="relu"))).build(jax.random.key(5), 2, 2))
    with pytest.warns(UserWarning, match="settings differ from like="):
        load(tmp_path / "relu", like=tanh)
    # Arrays that do not fit: that error alone, not first a warning that says the arrays match.
    narrow = NPE(**(TINY | dict(activation="tanh", hidden_features=8))).build(jax.random.key(0), 2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="but the file holds shape"):
            load(tmp_path / "relu", like=narrow)
    assert os.stat(tmp_path / "relu").st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_other_pytrees_keep_their_arrays_dtypes_and_kinds(tmp_path):
    flow = nsf(3, 2, num_transforms=2, hidden_features=8, key=jax.random.key(0))
    obj = {"flow": flow, "keys": jax.random.split(jax.random.key(3), 2), "half": jnp.arange(4, dtype=jnp.bfloat16),
           "counts": np.arange(5, dtype=np.int16), "scale": 2.5, "name": "run-1", "nothing": None}
    loaded = load(save(tmp_path / "obj", obj))
    assert loaded["scale"] == 2.5 and loaded["name"] == "run-1" and loaded["nothing"] is None
    assert loaded["half"].dtype == jnp.bfloat16 and np.array_equal(np.asarray(loaded["half"], np.float32), np.arange(4))
    assert isinstance(loaded["counts"], np.ndarray) and loaded["counts"].dtype == np.int16
    assert isinstance(loaded["flow"].bijection.stacked, type(flow.bijection.stacked))
    np.testing.assert_array_equal(jax.random.uniform(loaded["keys"][1], (3,)), jax.random.uniform(obj["keys"][1], (3,)))
    z, c = jnp.ones(3) * 0.3, jnp.array([0.1, -0.2])
    assert float(loaded["flow"].log_prob(z, c)) == float(flow.log_prob(z, c))


def test_nothing_is_overwritten_and_bad_files_are_refused(tmp_path):
    target = tmp_path / "keep"
    target.write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save(target, {"a": jnp.ones(2)})
    assert target.read_text() == "user data"
    save(target, {"a": jnp.ones(2)}, overwrite=True)
    assert float(load(target)["a"].sum()) == 2.0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(tmp_path / "no" / "such" / "dir" / "f", {"a": jnp.ones(2)})
    with pytest.raises(IsADirectoryError, match="is a folder"):
        save(tmp_path, {"a": jnp.ones(2)})
    with pytest.raises(TypeError, match="cannot be pickled"):
        save(tmp_path / "lambda", {"f": jax.tree_util.Partial(lambda v: v)})
    assert not (tmp_path / "lambda").exists() and not list(tmp_path.glob(".lambda.*"))  # no partial file left
    with pytest.raises(FileNotFoundError, match="no file at"):
        load(tmp_path / "missing")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ValueError, match="not a zip archive"):
        load(tmp_path / "text")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(ValueError, match="no readable header.json"):
        load(tmp_path / "other.zip")
    save(tmp_path / "new", {"a": jnp.ones(2)})
    with zipfile.ZipFile(tmp_path / "new") as zin, zipfile.ZipFile(tmp_path / "newer", "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "header.json":
                data = json.dumps(json.loads(data) | {"version": VERSION + 1})
            zout.writestr(item, data)
    with pytest.raises(ValueError, match=f"format version {VERSION + 1}"):
        load(tmp_path / "newer")
