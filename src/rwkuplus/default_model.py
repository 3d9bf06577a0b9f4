"""The one default-model rule of every command that takes ``--model`` (evaluate, unlearn, diagnose).

- ``--model`` given: that model.
- the benchmark is a world (``world``, ``world:SEED`` or a folder holding a ``world.json``): that
  world's subject model (the packaged default after knowledge injection of exactly that world), which
  ``rwkuplus subject`` or ``rwkuplus run`` builds; not built yet, or damaged, is a UserError saying how
  to build it. The packaged base model knows nothing of the world, so it is never the silent default.
- any other benchmark (RWKU): the packaged default model.

When the default is taken, the command prints which model it uses. (``rwkuplus run`` follows the
same rule on the world and builds the subject model itself when it is missing.)
"""

from __future__ import annotations

from typing import Callable

from .errors import UserError


def world_config_of(benchmark):
    """The WorldConfig of a world benchmark, or None for another benchmark."""
    source = benchmark.source or {}
    if source.get("kind") != "world":
        return None
    from .benchmark.world import WorldConfig

    config = source.get("world_config")
    return WorldConfig.from_json(config, where=f"{source.get('path', 'world')}/world.json") if config else WorldConfig()


def default_model(benchmark, model: str | None, dtype: str = "auto",
                  say: Callable[[str], None] | None = print) -> str:
    """The model spec a command uses: ``model`` if given, else the rule above (announced with ``say``)."""
    if model:
        return model
    from .models import DEFAULT_MODEL

    world = world_config_of(benchmark)
    if world is None:
        if say:
            say(f"model: {DEFAULT_MODEL} (the packaged default model; --model chooses another)")
        return DEFAULT_MODEL
    from .benchmark.world import WorldConfig
    from .integrity import check_folder
    from .subject import subject_model_dir

    folder = subject_model_dir(DEFAULT_MODEL, world, dtype=dtype)
    seedable = world == WorldConfig(seed=world.seed)  # a world 'rwkuplus subject --world-seed' can build
    build = ("'rwkuplus subject" + (f" --world-seed {world.seed}" if world.seed else "") + "' (or 'rwkuplus run')"
             if seedable else "the Python API (rwkuplus.subject.ensure_subject)")
    if folder is None:
        raise UserError(f"--model: the world's subject model is not built yet; build it with {build}, or give --model.")
    problem = check_folder(folder)
    if problem is not None:
        raise UserError(f"--model: the world's subject model in {folder} is damaged ({problem}); rebuild it with "
                        + ("'rwkuplus subject --force" + (f" --world-seed {world.seed}" if world.seed else "") + "'"
                           if seedable else build) + ", or give --model.")
    if say:
        say(f"model: the world's subject model, {folder} (the default on the world; --model chooses another)")
    return str(folder)
