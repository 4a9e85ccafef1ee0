"""Where a run's configuration comes from: TOML files, flag overrides, node profiles.

Precedence, lowest first: the defaults of :class:`~p2pfl.config.RunConfig`, the
``--config`` TOML file, then command-line flags.  Per-node settings come from a node
profile file (``--profiles nodes/NAME.toml``)::

    [default]            # applies to every node
    local_steps = 10

    [nodes."lab-a"]      # a node, by its graph label (or its integer id)
    lr = 0.1
    data_share = 2.0
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import fields

from .config import NODE_KEYS, RunConfig
from .errors import ConfigError, UsageError
from .transport.links import parse_link

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["load_toml", "from_sources", "with_sources", "read_profiles", "node_settings",
           "PATH_OPTIONS", "named_by_file", "profile_files"]


def load_toml(path: str) -> dict:
    """Read a TOML file; an unreadable or invalid file is a :class:`ConfigError`."""
    if not str(path).strip():
        raise ConfigError("an empty path names no TOML file")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        # a byte-order mark (Windows editors write one) was "Invalid statement" at 1:1
        return tomllib.loads(data.removeprefix(b"\xef\xbb\xbf").decode())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 (a Latin-1 comment is not)
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") \
            from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer past Python's 4,300 digits
        raise ConfigError(f"{path}: a value TOML reads cannot be made: {exc}") from None


def _coerce(name: str, value, source: str):
    """Check a value from TOML or a flag against the field's type."""
    ftype = {f.name: f.type for f in fields(RunConfig)}[name]
    if value is None:
        return None
    if "bool" in ftype and getattr(getattr(value, "dtype", None), "kind", None) == "b" \
            and getattr(value, "shape", None) == ():  # numpy's True and False (a comparison's)
        value = bool(value)
    if "bool" in ftype and not isinstance(value, bool):
        raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
    if ftype.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{source}: {name} must be an integer, got {value!r}")
        return int(value)  # numpy's integers too
    if ftype.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{source}: {name} must be a number, got {value!r}")
        try:
            return float(value)
        except OverflowError:  # an integer of hundreds of digits (no repr past 4,300)
            raise ConfigError(f"{source}: {name} is out of range, got an integer of "
                              f"{int(value).bit_length()} bits") from None
    if name == "link" and isinstance(value, dict):  # a TOML table, as a profile takes it
        value = ",".join(f"{k}={v!r}" for k, v in parse_link(value, f"{source}: link").items())
        if not value:  # an empty table: no link, as none
            return None
    if name == "profiles" and isinstance(value, (list, tuple)):  # several files
        if not value or not all(isinstance(v, (str, os.PathLike)) for v in value):
            raise ConfigError(f"{source}: profiles must be a file or a list of files, "
                              f"got {value!r}")
        files = tuple(os.fspath(v) for v in value)
        return files[0] if len(files) == 1 else files
    if ftype.startswith("str") and isinstance(value, os.PathLike):
        value = os.fspath(value)  # a pathlib.Path for out, topology, profiles, ...
    if ftype.startswith("str") and not isinstance(value, str):
        raise ConfigError(f"{source}: {name} must be a string, got {value!r}")
    return value


def from_sources(config_file: str | None = None, overrides: dict | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from defaults, a TOML file and explicit overrides.

    ``overrides`` holds only the options the user set (``None`` values are
    ignored), so flags win over the file.  Unknown keys are errors.
    """
    return with_sources(config_file, overrides)[0]


def with_sources(config_file: str | None = None, overrides: dict | None = None, *,
                 graph: bool = False) -> tuple:
    """:func:`from_sources`'s config, and where its options came from (config.json's
    ``sources``): the file, the options it set that no flag replaced, and the flags;
    every other option is its default.  ``graph``: a graph object gives the topology,
    as the flag would: the file's ``topology`` and ``nodes`` give way to it."""
    known = {f.name for f in fields(RunConfig)} - {"node_overrides"}
    values: dict = {}
    if config_file is not None:
        if not isinstance(config_file, (str, os.PathLike)) or \
                not isinstance(os.fspath(config_file), str):  # open(1) reads, closes stdout
            raise ConfigError(f"config must be the path of a TOML file, got "
                              f"{type(config_file).__name__}; options go as keywords")
        if not str(config_file).strip():
            raise ConfigError("--config is empty")
        values = _file_options(os.fspath(config_file), known)
        if graph:
            values.pop("topology", None)
            values.pop("nodes", None)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for key, value in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"unknown option {key!r}")
    for pair in (("nodes", "topology"), ("topology", "nodes")):
        if pair[0] in flags and pair[1] not in flags:  # a flag wins over the file's other
            values.pop(pair[1], None)
    sources = {"config_file": None if config_file is None else
               os.path.abspath(os.fspath(config_file)),
               "file": sorted(set(values) - set(flags)), "flags": sorted(flags)}
    for key, value in flags.items():
        values[key] = _coerce(key, value, "option")
    try:
        cfg = RunConfig(**values)
    except ConfigError as exc:
        raise named_by_file(exc, config_file, sources["file"]) from None
    if cfg.profiles:
        cfg = cfg.replace(node_overrides=read_profiles(cfg.profiles))
    return cfg, sources


def named_by_file(exc: UsageError, config_file, from_file: list) -> UsageError:
    """An error that names a flag (``--lr must be positive``) for a value the config file
    set names the file and its key instead (``run.toml: lr must be positive``): the
    user gave no such flag.  The same type: a TopologyError stays one."""
    m = re.match(r"--([a-z][a-z0-9-]*)", str(exc))
    key = m.group(1).replace("-", "_") if m else None
    if config_file is None or key not in from_file:
        return exc
    return type(exc)(f"{config_file}: {key}{str(exc)[m.end():]}")


#: Options naming a file or folder: in a config file, relative to the file's folder
#: when it exists there, else to the working directory.
PATH_OPTIONS = ("topology", "profiles", "availability", "keys", "data_dir")


def _near(base: str, given: str) -> str:
    """A relative path as the file in folder ``base`` where that exists, else as given."""
    if not given or os.path.isabs(given):
        return given
    candidate = os.path.join(base, given)
    return candidate if os.path.exists(candidate) else given


def _file_options(config_file: str, known: set) -> dict:
    """The options of a TOML config file: top-level keys, or those of a ``[p2pfl]``
    table (not both), checked and typed; relative paths resolved (PATH_OPTIONS)."""
    data = load_toml(config_file)
    if isinstance(data.get("p2pfl"), dict):
        others = sorted(set(data) - {"p2pfl"})
        if others:
            raise ConfigError(f"{config_file}: option(s) {', '.join(others)} outside the "
                              "[p2pfl] table; put every option in it, or none")
        data = data["p2pfl"]
    values, seen = {}, {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{config_file}: unknown option {key!r}")
        if name in seen:
            raise ConfigError(f"{config_file}: {seen[name]!r} and {key!r} are the same option")
        seen[name] = key
        values[name] = _coerce(name, value, config_file)
    base = os.path.dirname(os.path.abspath(config_file))
    for name in PATH_OPTIONS:
        given = values.get(name)
        if isinstance(given, tuple):  # several profile files
            values[name] = tuple(_near(base, g) for g in given)
        elif isinstance(given, str):
            values[name] = _near(base, given)
    from .topology.generators import SCHEDULE_SPECS

    head, _, rest = str(values.get("topology") or "").partition(":")
    if SCHEDULE_SPECS.get(head) == "FILE.json" and rest and not os.path.isabs(rest):
        candidate = os.path.join(base, rest)
        if os.path.exists(candidate):
            values["topology"] = f"{head}:{candidate}"
    return values


def profile_files(cfg) -> str:
    """The profile file, or files, of ``cfg``, as an error names them."""
    return ", ".join(cfg.profiles) if isinstance(cfg.profiles, tuple) else str(cfg.profiles)


def read_profiles(paths) -> dict:
    """Parse a node profile file, or several, into ``{"default": {...}, "nodes": {label:
    {...}}}``.  Of several, each sets keys of its own: two that set the same key of the
    same table (``[default]``, or ``[nodes.K]`` spelt alike) are refused, naming both
    (which should win is not for the order of the flags to say)."""
    if isinstance(paths, str):
        return _read_profile(paths)
    merged: dict = {"default": {}, "nodes": {}}
    set_by: dict = {}  # (table, key) -> the file that set it
    for path in paths:
        one = _read_profile(path)
        tables = [("default", merged["default"], one["default"])]
        tables += [(f"nodes.{k}", merged["nodes"].setdefault(k, {}), t)
                   for k, t in one["nodes"].items()]
        for where, into, table in tables:
            for key, value in table.items():
                if (where, key) in set_by:
                    raise ConfigError(f"{set_by[where, key]} and {path} both set [{where}] "
                                      f"{key}; set it in one of them")
                set_by[where, key] = path
                into[key] = value
    return merged


def _read_profile(path: str) -> dict:
    data = load_toml(path)
    unknown_sections = set(data) - {"default", "nodes"}
    if unknown_sections:
        raise ConfigError(f"{path}: unknown section(s) {', '.join(sorted(unknown_sections))}; "
                          "valid: default, nodes")
    default, nodes = data.get("default", {}), data.get("nodes", {})
    for where, table in (("[default]", default), ("[nodes]", nodes)):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {where} must be a table, got {table!r}")
    nodes = {str(k): v for k, v in nodes.items()}
    for where, table in [("default", default), *((f"nodes.{k}", v) for k, v in nodes.items())]:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table of node options, "
                              f"got {table!r}")
        bad = set(table) - NODE_KEYS
        if bad:
            raise ConfigError(f"{path}: [{where}] sets unknown node option(s) "
                              f"{', '.join(sorted(bad))}; valid: {', '.join(sorted(NODE_KEYS))}")
    return {"default": default, "nodes": nodes}


def node_settings(cfg: RunConfig, own: dict, label) -> dict:
    """The options of one node: the run's, then the profile's default, then its own
    table ``own`` (see ``plan_nodes.own_tables``)."""
    base = {k: getattr(cfg, k) for k in NODE_KEYS if hasattr(cfg, k)}
    base.setdefault("data_share", 1.0)
    base.setdefault("behaviour", "honest")
    base.setdefault("offline", [])
    prof = cfg.node_overrides or {}
    # a link is merged key by key: --link, then the profile's default, then the node's own
    link = parse_link(cfg.link) if cfg.link else {}
    for where, table in (("[default]", prof.get("default", {})), (f"[nodes.{label}]", own)):
        base.update(table)
        if "link" in table:
            link.update(parse_link(table["link"], f"profile {where} link"))
    base["link"] = link
    return base
