"""One tiny trained run built once per test run and shared by the evaluation, inference, predict and export tests.

The run uses the shapes of test_main's first run (tiny config, batch 4, 16 training pairs,
4 steps), so with the persistent XLA cache of conftest.py its compiles are shared with that test.
Checkpoints at steps 2 and 4; 5 validation images (one padded batch) of non-128 original sizes.
"""

import json
import os

BATCH = 4  # every inference call in these tests uses this batch size: one compile per function


def train_tiny_run(root: str) -> str:
  """Trains the tiny run into root/run and returns the workdir."""
  from segan_jax import train
  from segan_jax.configs import tiny

  config = tiny.get_config()
  config.train.num_steps = 4
  config.train.checkpoint_every = 2
  config.train.eval_every = 2
  config.data.val_size = 5
  workdir = os.path.join(root, "run")
  train.train_and_evaluate(config, workdir)
  return workdir


def switch_on_eval_option(workdir: str, name: str) -> None:
  """Sets eval.<name> in a run's config.json (a copy of the shared run), which leaves it off."""
  path = os.path.join(workdir, "config.json")
  with open(path) as f:
    config = json.load(f)
  assert config["eval"].get(name, False) is False
  config["eval"][name] = True
  with open(path, "w") as f:
    json.dump(config, f)
