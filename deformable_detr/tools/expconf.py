"""Offline validation of Determined 0.38.1 experiment configs.

Determined ships no client-side validator: only the master checks a config, against the JSON schemas
in its ``schemas/expconf`` folder. This module reads those schemas and checks a config the way the
master does, in two phases:

* sanity: the raw user config must parse (types, unions, custom checks);
* completeness: after the cluster's defaults are merged in and the schema defaults are filled, every
  ``eventuallyRequired`` property must be set and every ``eventually`` clause must hold.

On top of the schemas it applies the master's searcher rule (``SearcherConfig.AssertCurrent``) and,
separately, reports fields that 0.38 deprecates (:func:`deprecated_fields`).

The schemas use draft-07 plus Determined's own keywords, implemented here from their documented
semantics:

* ``union``: exactly one item must match; on failure, show the error of the item whose ``unionKey``
  selects it, else the union's ``defaultMessage``;
* ``checks``: ``{message: subschema}``; the message is the error when the subschema fails;
* ``compareProperties``: ``a<b``, ``a<=b`` or ``a_is_subdir_of_b`` between two properties;
* ``disallowProperties``: ``{property: message}``;
* ``optionalRef``: like ``$ref`` but only for non-null values;
* ``eventuallyRequired`` / ``eventually``: ``required`` / a subschema, enforced only at completeness.

Errors read like the master's: ``<config>.searcher.max_trials: <message>``.

The schemas are those of Determined 0.38.1 (:func:`find_schemas_dir`): ``$DET_SCHEMAS_DIR`` when set,
else a per-user cache, which the first use fills by downloading the files from Determined's source at the
``0.38.1`` tag, each checked against the SHA-256 in ``expconf_schemas.json`` next to this module.

Command line: ``python -m deformable_detr.tools.expconf config.yaml [...]`` prints every problem (errors and
deprecated fields) and exits 1; it exits 2 when the schemas cannot be obtained.
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import http.client
import json
import logging
import os
import posixpath
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import jsonschema.validators
import referencing
import yaml
from filelock import FileLock
from jsonschema.exceptions import ValidationError

logger = logging.getLogger(__name__)

SCHEMA_PREFIX = "http://determined.ai/schemas/expconf/v0/"
EXPERIMENT_URL = SCHEMA_PREFIX + "experiment.json"
SCHEMAS_DIR_ENV = "DET_SCHEMAS_DIR"
SCHEMAS_URL_ENV = "DET_SCHEMAS_URL"
MANIFEST_PATH = Path(__file__).with_name("expconf_schemas.json")


def _read_manifest() -> tuple[str, str, dict[str, str]]:
    with MANIFEST_PATH.open() as f:
        manifest = json.load(f)
    return manifest["determined_version"], manifest["path"], manifest["sha256"]


# The Determined release the schemas come from, their folder in its source tree, and file name -> SHA-256.
SCHEMAS_VERSION, SCHEMAS_SOURCE_PATH, SCHEMA_SHA256 = _read_manifest()
# Raw files of Determined's source at the release tag; $DET_SCHEMAS_URL replaces it (same layout below it).
DEFAULT_SCHEMAS_URL = f"https://raw.githubusercontent.com/determined-ai/determined/{SCHEMAS_VERSION}"
DOWNLOAD_TIMEOUT_S = 30.0

# What a stock master.yaml contributes before completeness validation: the master merges its
# cluster-wide checkpoint storage into every experiment that names none.
DEFAULT_CLUSTER_CONFIG: dict[str, Any] = {
    "checkpoint_storage": {
        "type": "shared_fs",
        "host_path": "/tmp",
        "storage_path": "determined-checkpoint",
    },
}

# Values the master fills at submission time (not schema defaults). Offline we only need them to be
# present and well-typed so the completeness phase can run.
RUNTIME_IMAGE = "<the master's default image>"
RUNTIME_EXPERIMENT_NAME = "<experiment name chosen by the master>"

# Log policies every experiment gets unless the user overrides them by name (0.38 defaults).
DEFAULT_LOG_POLICIES: tuple[dict[str, Any], ...] = (
    {"name": "CUDA OOM", "pattern": ".*CUDA out of memory.*"},
    {"name": "ECC Error", "pattern": ".*uncorrectable ECC error encountered.*"},
)

# Union types whose Go structs hold fields common to every member; merging two configs of different
# members keeps only the first one's member and merges the common fields.
_UNION_DISCRIMINATORS = {
    SCHEMA_PREFIX + "searcher.json": "name",
    SCHEMA_PREFIX + "checkpoint-storage.json": "type",
}

# List types whose Go merge appends the other list's entries that are not already present.
_APPEND_MERGE_KEYS: dict[str, Callable[[Any], Any]] = {
    SCHEMA_PREFIX + "bind-mounts.json": lambda item: item.get("container_path"),
    SCHEMA_PREFIX + "devices.json": lambda item: item.get("container_path"),
}

_EOL_SEARCHERS = ("sync_halving", "adaptive", "adaptive_simple", "custom")


class SchemasNotFoundError(FileNotFoundError):
    """Determined's expconf JSON schemas are neither in ``$DET_SCHEMAS_DIR``, nor cached, nor downloadable."""


class SchemaChecksumError(ValueError):
    """A downloaded or cached schema file whose SHA-256 is not the one in the shipped manifest."""


def _expconf_folder(root: Path) -> Path:
    """``<root>/expconf``, or ``<root>/expconf/v0`` as in Determined's source tree."""
    nested = root / "expconf" / "v0"
    return nested if nested.is_dir() else root / "expconf"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def schemas_cache_dir() -> Path:
    """Where the downloaded schemas live: ``$XDG_CACHE_HOME`` (default ``~/.cache``), then
    ``deformable_detr/determined-schemas-<version>``, holding ``expconf/*.json``."""
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_root) / "deformable_detr" / f"determined-schemas-{SCHEMAS_VERSION}"


def cached_schemas_dir() -> Path | None:
    """The cache folder when it holds the schemas, None when nothing is cached yet.

    The folder only ever appears complete (it is renamed into place after every file was verified),
    so anything else in it means it was altered: that is an error, not a reason to download again.
    """
    root = schemas_cache_dir()
    if not root.exists():
        return None
    folder = root / "expconf"
    for name, expected in SCHEMA_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise SchemaChecksumError(
                f"cached schema {path} is missing (expected sha256 {expected}); delete {root} to download again"
            )
        actual = _sha256(path.read_bytes())
        if actual != expected:
            raise SchemaChecksumError(
                f"cached schema {path} has sha256 {actual}, expected {expected}; delete {root} to download again"
            )
    return root


def _unavailable(reason: str) -> SchemasNotFoundError:
    return SchemasNotFoundError(
        f"Determined {SCHEMAS_VERSION}'s expconf schemas not found: ${SCHEMAS_DIR_ENV} is not set, "
        f"they are not cached in {schemas_cache_dir()}, and downloading them failed: {reason}. "
        f"Run once with network access to cache them, or set {SCHEMAS_DIR_ENV} to the schemas/ folder "
        f"of a Determined {SCHEMAS_VERSION} source checkout."
    )


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise _unavailable(f"{url}: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        raise _unavailable(f"{url}: {err.reason}") from err
    except (OSError, http.client.HTTPException) as err:
        raise _unavailable(f"{url}: {err!r}") from err


def download_schemas() -> Path:
    """Download every file of the manifest into :func:`schemas_cache_dir` and return that folder.

    The files come from ``$DET_SCHEMAS_URL`` (default :data:`DEFAULT_SCHEMAS_URL`) followed by
    ``schemas/expconf/v0/<name>``. They are written to a staging folder and checked against the
    manifest; only a complete, verified set is renamed into place, under a file lock so that
    concurrent first uses download once. A failure leaves the cache as it was.
    """
    base_url = (os.environ.get(SCHEMAS_URL_ENV) or DEFAULT_SCHEMAS_URL).rstrip("/")
    root = schemas_cache_dir()
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{root}.lock"):
        cached = cached_schemas_dir()
        if cached is not None:  # another process finished the download while this one waited
            return cached
        staging_prefix = f".{root.name}-"
        for stale in root.parent.glob(staging_prefix + "*"):  # left by a process that was killed
            shutil.rmtree(stale, ignore_errors=True)
        logger.info("downloading Determined %s's expconf schemas from %s into %s", SCHEMAS_VERSION, base_url, root)
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix, dir=root.parent))
        try:
            folder = staging / "expconf"
            folder.mkdir()
            for name, expected in SCHEMA_SHA256.items():
                url = f"{base_url}/{SCHEMAS_SOURCE_PATH}/{name}"
                data = _fetch(url)
                actual = _sha256(data)
                if actual != expected:
                    raise SchemaChecksumError(
                        f"schema {name} downloaded from {url} has sha256 {actual}, expected {expected}"
                    )
                (folder / name).write_bytes(data)
            os.replace(staging, root)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return root


def find_schemas_dir() -> Path:
    """The folder holding ``expconf/*.json``: ``$DET_SCHEMAS_DIR`` as is, else the verified cache, else
    the cache after :func:`download_schemas`."""
    configured = os.environ.get(SCHEMAS_DIR_ENV)
    if configured:
        path = Path(configured)
        if not _expconf_folder(path).is_dir():
            raise SchemasNotFoundError(
                f"Determined's expconf schemas not found: {path / 'expconf'} (from ${SCHEMAS_DIR_ENV}) does not "
                f"exist; set {SCHEMAS_DIR_ENV} to a folder holding expconf/*.json, such as the schemas/ folder "
                f"of a Determined {SCHEMAS_VERSION} source checkout, or unset it to use the download cache"
            )
        return path
    cached = cached_schemas_dir()
    return cached if cached is not None else download_schemas()


# --------------------------------------------------------------------------------------------------
# Custom keywords
# --------------------------------------------------------------------------------------------------


def _union_key_selects(key: str, instance: Any) -> bool:
    """Evaluate a ``unionKey`` (``always``, ``never``, ``not:``, ``const:a=b``, ``singleproperty:a``,
    ``type:array|object``, ``hasattr:a``) against an instance."""
    if key == "always":
        return True
    if key == "never":
        return False
    if key.startswith("not:"):
        return not _union_key_selects(key[len("not:") :], instance)
    if key.startswith("const:"):
        name, sep, value = key[len("const:") :].partition("=")
        if not sep:
            raise ValueError(f"invalid unionKey {key!r}: expected const:<name>=<value>")
        return isinstance(instance, dict) and instance.get(name) == value
    if key.startswith("singleproperty:"):
        return isinstance(instance, dict) and len(instance) == 1 and key[len("singleproperty:") :] in instance
    if key == "type:array":
        return isinstance(instance, list)
    if key == "type:object":
        return isinstance(instance, dict)
    if key.startswith("hasattr:"):
        return isinstance(instance, dict) and key[len("hasattr:") :] in instance
    raise ValueError(f"invalid unionKey {key!r}")


def _union(
    validator: Any, union: Mapping[str, Any], instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    selected_errors: list[ValidationError] | None = None
    n_valid = 0
    for item in union["items"]:
        errors = list(validator.descend(instance, item))
        if not errors:
            n_valid += 1
        elif selected_errors is None and _union_key_selects(item["unionKey"], instance):
            selected_errors = errors
    if n_valid == 1:
        return
    if n_valid > 1:
        yield ValidationError("bug in validation! Multiple schemas matched")
        return
    if selected_errors is not None:
        # The master groups these under the union's message; only the leaves are shown.
        yield from selected_errors
        return
    yield ValidationError(union.get("defaultMessage", "union failed to validate"))


def _checks(
    validator: Any, checks: Mapping[str, Any], instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    for message, subschema in checks.items():
        if not validator.evolve(schema=subschema).is_valid(instance):
            yield ValidationError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _property_by_path(instance: Any, dotted: str) -> tuple[bool, Any]:
    for key in dotted.split("."):
        if not isinstance(instance, dict) or key not in instance:
            return False, None
        instance = instance[key]
    return True, instance


def _compare_properties(
    validator: Any, spec: Mapping[str, str], instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    # Like the master, a missing or wrongly-typed property is left to the other keywords to report.
    found_a, a = _property_by_path(instance, spec["a"])
    found_b, b = _property_by_path(instance, spec["b"])
    if not (found_a and found_b):
        return
    kind = spec["type"]
    if kind in ("a<b", "a<=b"):
        if not (_is_number(a) and _is_number(b)):
            return
        if (kind == "a<b" and a >= b) or (kind == "a<=b" and a > b):
            yield ValidationError(f"{spec['a']} must be less than {spec['b']}")
    elif kind == "a_is_subdir_of_b":
        if not (isinstance(a, str) and isinstance(b, str)):
            return
        a_path, b_path = posixpath.normpath(a), posixpath.normpath(b)
        # The master compares cleaned paths by string prefix; we do the same to agree with it.
        if (posixpath.isabs(a_path) and not a_path.startswith(b_path)) or (
            not posixpath.isabs(a_path) and a_path.startswith("..")
        ):
            yield ValidationError(f"{spec['a']} must be a subdirectory of {spec['b']}")
    else:
        raise ValueError(f"unknown compareProperties type {kind!r}")


def _disallow_properties(
    validator: Any, disallowed: Mapping[str, str], instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for prop, message in disallowed.items():
            if prop in instance:
                yield ValidationError(message)


def _optional_ref(validator: Any, url: str, instance: Any, schema: Mapping) -> Iterator[ValidationError]:
    if instance is not None:
        yield from validator.descend(instance, {"$ref": url})


def _eventually_required(
    validator: Any, required: list[str], instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    if isinstance(instance, dict):
        for prop in required:
            if instance.get(prop) is None:
                yield ValidationError(f"{prop} is a required property")


def _eventually(
    validator: Any, subschema: Mapping, instance: Any, schema: Mapping
) -> Iterator[ValidationError]:
    yield from validator.descend(instance, subschema)


def _skip(validator: Any, value: Any, instance: Any, schema: Mapping) -> Iterator[ValidationError]:
    """A completeness-only keyword seen during the sanity phase."""
    return iter(())


_COMMON_KEYWORDS = {
    "union": _union,
    "checks": _checks,
    "compareProperties": _compare_properties,
    "disallowProperties": _disallow_properties,
    "optionalRef": _optional_ref,
}
SanityValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator, {**_COMMON_KEYWORDS, "eventuallyRequired": _skip, "eventually": _skip}
)
CompletenessValidator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    {**_COMMON_KEYWORDS, "eventuallyRequired": _eventually_required, "eventually": _eventually},
)


def render_path(path: Any) -> str:
    """``["searcher", "bracket_rungs", 2]`` -> ``<config>.searcher.bracket_rungs[2]``."""
    parts = ["<config>"]
    for element in path:
        parts.append(f"[{element}]" if isinstance(element, int) else f".{element}")
    return "".join(parts)


def _render(error: ValidationError) -> str:
    return f"{render_path(error.absolute_path)}: {error.message}"


# --------------------------------------------------------------------------------------------------
# Normalisation (what the master's Go structs do when they parse a config)
# --------------------------------------------------------------------------------------------------


def _normalize_image(value: Any) -> Any:
    if isinstance(value, str):
        return {"cpu": value, "cuda": value, "rocm": value}
    if isinstance(value, dict) and "gpu" in value:
        value = dict(value)
        gpu = value.pop("gpu")
        if value.get("cuda") is None:
            value["cuda"] = gpu
    return value


def _normalize_environment_variables(value: Any) -> Any:
    if isinstance(value, list):
        return {"cpu": list(value), "cuda": list(value), "rocm": list(value)}
    if isinstance(value, dict):
        value = dict(value)
        gpu = value.pop("gpu", None)
        if value.get("cuda") is None and gpu is not None:
            value["cuda"] = gpu
        for key in ("cpu", "cuda", "rocm"):
            if value.get(key) is None:
                value[key] = []
    return value


def _normalize_device(value: Any) -> Any:
    # docker-run form: host:container[:mode]
    if isinstance(value, str):
        host, container, *mode = value.split(":")
        device: dict[str, Any] = {"host_path": host, "container_path": container}
        if mode:
            device["mode"] = mode[0]
        return device
    return value


def _normalize_hyperparameter(value: Any) -> Any:
    # An object without "type" is a nested group; anything else without "type" is a constant.
    if isinstance(value, dict) and "type" not in value:
        return {key: _normalize_hyperparameter(child) for key, child in value.items()}
    if isinstance(value, dict):
        return value
    return {"type": "const", "val": value}


def _normalize_log_action(value: Any) -> Any:
    # The legacy {"type": "cancel_retries"} form is read as the plain string.
    if isinstance(value, dict) and set(value) == {"type"}:
        return value["type"]
    return value


_NORMALIZERS: dict[str, Callable[[Any], Any]] = {
    SCHEMA_PREFIX + "environment-image.json": _normalize_image,
    SCHEMA_PREFIX + "environment-variables.json": _normalize_environment_variables,
    SCHEMA_PREFIX + "devices.json": lambda value: _map_list(_normalize_device, value),
    SCHEMA_PREFIX + "hyperparameter.json": _normalize_hyperparameter,
    SCHEMA_PREFIX + "log-action.json": _normalize_log_action,
}


def _runtime_image(value: dict[str, Any]) -> dict[str, Any]:
    value.pop("gpu", None)  # read as "cuda" when the config was parsed
    for key in ("cpu", "cuda", "rocm"):
        if value.get(key) is None:
            value[key] = RUNTIME_IMAGE
    return value


def _drop_gpu_key(value: dict[str, Any]) -> dict[str, Any]:
    value.pop("gpu", None)  # read as "cuda" when the config was parsed
    return value


def _runtime_log_policies(value: list[Any]) -> list[Any]:
    named = {policy.get("name") for policy in value if isinstance(policy, dict)}
    return value + [dict(policy) for policy in DEFAULT_LOG_POLICIES if policy["name"] not in named]


def _runtime_experiment(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("name") is None:
        value["name"] = RUNTIME_EXPERIMENT_NAME
    return value


def _runtime_reproducibility(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("experiment_seed") is None:
        value["experiment_seed"] = int(time.time()) & 0x7FFFFFFF  # the master seeds from the clock
    return value


def _runtime_test_root(value: dict[str, Any]) -> dict[str, Any]:
    if value.get("runtime_defaultable") is None:
        value["runtime_defaultable"] = 10
    return value


_RUNTIME_DEFAULTS: dict[str, Callable[[Any], Any]] = {
    SCHEMA_PREFIX + "environment-image-map.json": _runtime_image,
    SCHEMA_PREFIX + "environment-variables-map.json": _drop_gpu_key,
    SCHEMA_PREFIX + "log-policies.json": _runtime_log_policies,
    SCHEMA_PREFIX + "experiment.json": _runtime_experiment,
    SCHEMA_PREFIX + "reproducibility.json": _runtime_reproducibility,
    SCHEMA_PREFIX + "test-root.json": _runtime_test_root,
}


# --------------------------------------------------------------------------------------------------
# The schema set
# --------------------------------------------------------------------------------------------------


class ExpconfSchemas:
    """Determined's expconf schemas, with sanity/completeness validation, defaults and merging.

    Args:
        schemas: ``{$id: schema}`` for every schema of the set.
    """

    def __init__(self, schemas: Mapping[str, Mapping[str, Any]]) -> None:
        self.schemas = dict(schemas)
        self._registry = referencing.Registry().with_resources(
            (url, referencing.Resource.from_contents(schema, default_specification=referencing.jsonschema.DRAFT7))
            for url, schema in self.schemas.items()
        )

    # -- validation ---------------------------------------------------------------------------------

    def _schema(self, url: str) -> Mapping[str, Any]:
        try:
            return self.schemas[url]
        except KeyError:
            raise KeyError(f"unknown schema {url!r}; known: {sorted(self.schemas)}") from None

    def _errors(self, cls: Any, instance: Any, url: str) -> list[str]:
        validator = cls(self._schema(url), registry=self._registry)
        rendered = [_render(error) for error in validator.iter_errors(instance)]
        return sorted(set(rendered), key=rendered.index)

    def sanity_errors(self, instance: Any, url: str = EXPERIMENT_URL) -> list[str]:
        """Errors of the sanity phase (raw user input) against the schema ``url``."""
        return self._errors(SanityValidator, instance, url)

    def completeness_errors(self, instance: Any, url: str = EXPERIMENT_URL) -> list[str]:
        """Errors of the completeness phase (after defaults) against the schema ``url``."""
        return self._errors(CompletenessValidator, instance, url)

    def _is_sane(self, instance: Any, schema: Mapping[str, Any]) -> bool:
        return SanityValidator(schema, registry=self._registry).is_valid(instance)

    # -- schema walking -----------------------------------------------------------------------------

    def _resolve(self, schema: Any, instance: Any) -> tuple[str | None, Any]:
        """Follow ``$ref`` / ``optionalRef``; returns (the $id reached or None, the schema)."""
        url = None
        while isinstance(schema, dict):
            target = schema.get("$ref") or (schema.get("optionalRef") if instance is not None else None)
            if target is None:
                break
            url, schema = target, self._schema(target)
        if isinstance(schema, dict) and "$id" in schema:
            url = schema["$id"]
        return url, schema

    def _union_member(self, schema: Mapping[str, Any], instance: Any) -> Any:
        """The union item an instance belongs to (the one it validates against), or None."""
        union = schema.get("union") or (schema.get("then") or {}).get("union")
        if union is None:
            return None
        for item in union["items"]:
            if self._is_sane(instance, item):
                return item
        for item in union["items"]:
            if _union_key_selects(item["unionKey"], instance):
                return item
        return None

    # -- defaults -----------------------------------------------------------------------------------

    def with_defaults(self, instance: Any, url: str = EXPERIMENT_URL) -> Any:
        """A copy of ``instance`` with schema defaults and the master's runtime defaults filled in,
        in the normalised form the master stores (e.g. image strings become cpu/cuda/rocm maps)."""
        return self._fill(copy.deepcopy(instance), self._schema(url))

    def _fill(self, instance: Any, schema: Any) -> Any:
        if instance is None:
            return None
        url, schema = self._resolve(schema, instance)
        if url in _NORMALIZERS:
            instance = _NORMALIZERS[url](instance)
        if not isinstance(schema, dict):
            return instance
        member = self._union_member(schema, instance)
        if member is not None:
            instance = self._fill(instance, member)
        elif isinstance(instance, dict):
            properties = schema.get("properties", {})
            for key, subschema in properties.items():
                if not isinstance(subschema, dict):
                    continue
                if instance.get(key) is None and subschema.get("default") is not None:
                    instance[key] = copy.deepcopy(subschema["default"])
                if instance.get(key) is not None:
                    instance[key] = self._fill(instance[key], subschema)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                for key in instance:
                    if key not in properties:
                        instance[key] = self._fill(instance[key], extra)
        elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
            instance = [self._fill(item, schema["items"]) for item in instance]
        if url in _RUNTIME_DEFAULTS:
            instance = _RUNTIME_DEFAULTS[url](instance)
        return instance

    # -- merging ------------------------------------------------------------------------------------

    def merge(self, obj: Any, src: Any, url: str = EXPERIMENT_URL) -> Any:
        """Merge ``src`` into ``obj`` as the master merges cluster defaults into a config: values set
        in ``obj`` win; lists of bind mounts, devices and log policies are unioned; union types
        (searcher, checkpoint storage) only take ``src``'s member fields when it is the same member."""
        return self._merge(copy.deepcopy(obj), copy.deepcopy(src), self._schema(url))

    def _merge(self, obj: Any, src: Any, schema: Any) -> Any:
        url, schema = self._resolve(schema, obj if obj is not None else src)
        if url in _NORMALIZERS:
            obj, src = _NORMALIZERS[url](obj), _NORMALIZERS[url](src)
        if obj is None:
            return src
        if src is None or not isinstance(schema, dict):
            return obj
        if url == SCHEMA_PREFIX + "log-policies.json":
            return _append_missing(_normalize_policies(obj), _normalize_policies(src), _log_policy_key)
        if url in _APPEND_MERGE_KEYS:
            return _append_missing(obj, src, _APPEND_MERGE_KEYS[url])
        if url == SCHEMA_PREFIX + "hyperparameter.json":
            if not (_is_nested_hp(obj) and _is_nested_hp(src)):
                return obj
            return {**src, **{key: self._merge(value, src.get(key), schema) for key, value in obj.items()}}
        if url in _UNION_DISCRIMINATORS and isinstance(obj, dict) and isinstance(src, dict):
            discriminator = _UNION_DISCRIMINATORS[url]
            if obj.get(discriminator) is not None and src.get(discriminator) != obj.get(discriminator):
                common = [key for key, sub in schema.get("properties", {}).items() if isinstance(sub, dict)]
                src = {key: value for key, value in src.items() if key in common}
            member = self._union_member(schema, obj if obj.get(discriminator) is not None else src)
            return self._merge_objects(obj, src, member if member is not None else schema)
        if isinstance(obj, dict) and isinstance(src, dict):
            member = self._union_member(schema, obj)
            if member is not None:
                if not self._is_sane(src, member):
                    return obj
                return self._merge(obj, src, member)
            return self._merge_objects(obj, src, schema)
        return obj

    def _merge_objects(self, obj: dict[str, Any], src: dict[str, Any], schema: Any) -> dict[str, Any]:
        _, schema = self._resolve(schema, obj)
        properties = schema.get("properties", {}) if isinstance(schema, dict) else {}
        extra = schema.get("additionalProperties") if isinstance(schema, dict) else None
        merged = dict(obj)
        for key, value in src.items():
            subschema = properties.get(key, extra)
            if merged.get(key) is None:
                merged[key] = value
            elif isinstance(subschema, dict):
                merged[key] = self._merge(merged[key], value, subschema)
        return merged


def _is_nested_hp(value: Any) -> bool:
    return isinstance(value, dict) and "type" not in value


def _log_policy_key(policy: Any) -> Any:
    # Named policies are identified by name; legacy unnamed ones by pattern and action.
    if not isinstance(policy, dict):
        return json.dumps(policy, sort_keys=True)
    if policy.get("name") is not None:
        return ("name", policy["name"])
    return ("legacy", policy.get("pattern"), json.dumps(policy.get("action"), sort_keys=True))


def _append_missing(obj: list[Any], src: list[Any], key: Callable[[Any], Any]) -> list[Any]:
    """``obj`` followed by the entries of ``src`` whose key is not in ``obj`` (Go's list merge)."""
    if not isinstance(obj, list) or not isinstance(src, list):
        return obj
    seen = {key(item) for item in obj}
    return obj + [item for item in src if key(item) not in seen]


def _map_list(function: Callable[[Any], Any], value: Any) -> Any:
    return [function(item) for item in value] if isinstance(value, list) else value


def _normalize_policies(value: Any) -> Any:
    def normalize(policy: Any) -> Any:
        if isinstance(policy, dict) and "action" in policy:
            return {**policy, "action": _normalize_log_action(policy["action"])}
        return policy

    return _map_list(normalize, value)


@functools.lru_cache(maxsize=4)
def load_schemas(schemas_dir: str | None = None) -> ExpconfSchemas:
    """Read ``<schemas_dir>/expconf/*.json`` or ``<schemas_dir>/expconf/v0/*.json``
    (default: :func:`find_schemas_dir`)."""
    root = Path(schemas_dir) if schemas_dir is not None else find_schemas_dir()
    folder = _expconf_folder(root)
    if not folder.is_dir():
        raise SchemasNotFoundError(f"Determined's expconf schemas not found: {folder} does not exist")
    schemas: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        with path.open() as f:
            schema = json.load(f)
        if "$id" not in schema:
            raise ValueError(f"{path}: schema has no $id")
        # Without "$schema", a $ref stays with our extended validator instead of switching to the
        # stock draft-07 one, which would ignore Determined's keywords.
        schema.pop("$schema", None)
        schemas[schema["$id"]] = schema
    if EXPERIMENT_URL not in schemas:
        raise SchemasNotFoundError(f"{folder} holds no schema with $id {EXPERIMENT_URL}")
    return ExpconfSchemas(schemas)


# --------------------------------------------------------------------------------------------------
# The master's extra rules and our deprecation report
# --------------------------------------------------------------------------------------------------


def searcher_errors(config: Mapping[str, Any]) -> list[str]:
    """The master's ``SearcherConfig.AssertCurrent`` rule (0.38): ``adaptive_asha`` and
    ``async_halving`` need ``max_time`` and ``time_metric`` (``max_length`` alone is rejected);
    EOL searchers are refused."""
    searcher = config.get("searcher")
    if not isinstance(searcher, dict):
        return []
    name = searcher.get("name")
    if name in ("adaptive_asha", "async_halving"):
        if searcher.get("max_time") is None or searcher.get("time_metric") is None:
            return [
                f"<config>.searcher: the `{name}` searcher requires `max_time` and `time_metric` to be set"
            ]
    elif name in _EOL_SEARCHERS:
        return [f"<config>.searcher: the '{name}' searcher has been removed and is not valid for new experiments"]
    return []


def deprecated_fields(config: Mapping[str, Any]) -> list[str]:
    """Fields of a raw config that 0.38 deprecates where a replacement exists, one message each."""
    found = []
    searcher = config.get("searcher")
    if isinstance(searcher, dict):
        if searcher.get("max_length") is not None:
            found.append(
                "searcher.max_length is deprecated: give the training length to the Trainer "
                "(fit(max_length=...)) and, for adaptive searchers, set searcher.max_time and searcher.time_metric"
            )
        if searcher.get("stop_once") is not None:
            found.append("searcher.stop_once is deprecated and ignored: remove it")
    replacements = {
        "min_validation_period": "pass validation_period to Trainer.fit()",
        "min_checkpoint_period": "pass checkpoint_period to Trainer.fit()",
        "scheduling_unit": "pass report_period to Trainer.fit()",
        "optimizations": "configure the optimisations in the training code",
        "records_per_epoch": "lengths are counted in batches or epochs by the Trainer",
    }
    for key, replacement in replacements.items():
        if config.get(key) is not None:
            found.append(f"{key} is deprecated: {replacement}")
    entrypoint = config.get("entrypoint")
    if isinstance(entrypoint, str) and _is_trial_class_entrypoint(entrypoint):
        found.append(
            f"entrypoint {entrypoint!r} uses the deprecated module:Class form: "
            "give a command that runs the training script, e.g. 'python3 model_def.py'"
        )
    return found


def _is_trial_class_entrypoint(entrypoint: str) -> bool:
    parts = entrypoint.split()
    if len(parts) != 1 or ":" not in parts[0]:
        return False
    module, _, attr = parts[0].partition(":")
    return all(piece.isidentifier() for piece in module.split(".")) and attr.isidentifier()


def validate_config(
    config: Any,
    cluster_defaults: Mapping[str, Any] | None = None,
    schemas: ExpconfSchemas | None = None,
) -> list[str]:
    """Check an experiment config as the Determined 0.38.1 master does; ``[]`` when it is valid.

    Args:
        config: the parsed YAML of an experiment config.
        cluster_defaults: what the cluster merges in before completeness validation
            (default :data:`DEFAULT_CLUSTER_CONFIG`: a checkpoint storage).
        schemas: the schema set (default: :func:`load_schemas`).
    """
    if not isinstance(config, dict):
        return [f"<config>: an experiment config must be a mapping, not {type(config).__name__}"]
    schemas = schemas if schemas is not None else load_schemas()
    errors = schemas.sanity_errors(config)
    if errors:
        return errors
    defaults = DEFAULT_CLUSTER_CONFIG if cluster_defaults is None else cluster_defaults
    complete = schemas.with_defaults(schemas.merge(config, dict(defaults)))
    return schemas.completeness_errors(complete) + searcher_errors(config)


# --------------------------------------------------------------------------------------------------
# This package's own settings: what the trial would refuse
# --------------------------------------------------------------------------------------------------

_SEARCH_SPACE_TYPES = ("const", "categorical", "int", "double", "log")


def _candidate_values(name: str, value: Any) -> list[tuple[Any, str]]:
    """Every value a trial can get for one hyperparameter, each with how to name it in an error: the value
    of `const`, each of `categorical`, both bounds of `int`/`double`, ``base ** bound`` of `log`; a plain value
    as is; a nested mapping as each combination of its keys' first values with one key varied."""
    if isinstance(value, Mapping) and value.get("type") in _SEARCH_SPACE_TYPES:
        kind = value["type"]
        if kind == "const":
            return [(value.get("val"), "")]
        if kind == "categorical":
            return [(choice, f" (categorical value {choice!r} of {name})") for choice in value.get("vals") or []]
        bounds = [("minval", value.get("minval")), ("maxval", value.get("maxval"))]
        if kind == "log":
            base = value.get("base", 10)
            return [(base**bound, f" (log {key} {base}**{bound} of {name})") for key, bound in bounds
                    if _is_number(base) and _is_number(bound)]
        return [(bound, f" ({kind} {key} of {name})") for key, bound in bounds]
    if isinstance(value, Mapping) and "type" not in value:
        inner = {key: _candidate_values(f"{name}.{key}", item) for key, item in value.items()}
        if any(not candidates for candidates in inner.values()):
            return []
        first = {key: candidates[0][0] for key, candidates in inner.items()}
        variants = [(first, "")]
        for key, candidates in inner.items():
            variants += [({**first, key: candidate}, where) for candidate, where in candidates[1:]]
        return variants
    return [(value, "")]


def hyperparameter_samples(hyperparameters: Mapping[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The hyperparameter sets to check, each with a note naming what it varies: every hyperparameter at its
    first candidate value, then each other candidate value of each hyperparameter with the rest at their
    first (so a search space is checked value by value, not in every combination)."""
    candidates = {name: _candidate_values(name, value) for name, value in hyperparameters.items()}
    base = {name: values[0][0] for name, values in candidates.items() if values}
    samples = [(base, "")]
    for name, values in candidates.items():
        samples += [({**base, name: value}, where) for value, where in values[1:]]
    return samples


def _every_error(
    parse: Callable[[dict[str, Any]], Any], mapping: Mapping[str, Any], known: frozenset[str], section: str,
    key_pattern: str, stand_ins: Mapping[str, Any] | None = None,
) -> list[str]:
    """Every error `parse` finds in `mapping`, not only the first: unknown keys are reported and dropped, then
    each key an error names (`key_pattern`'s group 1) is dropped (back to its default, or to its `stand_ins`
    value when it has no default) and the rest parsed again, so one bad key does not hide another and keys
    that depend on each other are checked together. An error about a key already reported ends the search
    (it follows from the replacement, not from the config)."""
    stand_ins = stand_ins or {}
    replaced: set[str] = set()
    from deformable_detr.config.parsing import reject_unknown

    errors = []
    remaining = dict(mapping)
    try:
        reject_unknown(section, remaining, known)
    except ValueError as error:
        errors.append(str(error))
        remaining = {key: value for key, value in remaining.items() if key in known}
    for _ in range(len(remaining) + 1):
        try:
            parse(remaining)
            break
        except ValueError as error:
            named = re.search(key_pattern, str(error))
            key = named.group(1) if named else None
            if key in replaced:
                break
            errors.append(str(error))
            if key not in remaining:
                break
            replaced.add(key)
            if key in stand_ins:
                remaining[key] = stand_ins[key]
            else:
                del remaining[key]
    return errors


def settings_errors(config: Any) -> list[str]:
    """What this package's settings layer (``deformable_detr.config``) refuses in a config, as the trial would
    parse it: every hyperparameter value a trial can be given (see :func:`hyperparameter_samples`), the
    ``data:`` section and its ``trainer`` run settings, then the experiment as a whole; ``[]`` when the trial
    would accept every trial of the experiment. Each error names its key."""
    # Imported here: the schema checks above do not need the package's settings.
    from deformable_detr.config.data import TRAINER_KEY, DataSettings
    from deformable_detr.config.experiment import HYPERPARAMETER_KEYS, ExperimentSettings, parse_hyperparameters
    from deformable_detr.config.parsing import HYPERPARAMETERS, field_names
    from deformable_detr.config.run import RunSettings

    if not isinstance(config, Mapping):
        return []  # validate_config reports it
    found: list[str] = []

    def add(messages: list[str], where: str = "") -> None:
        for message in messages:
            if not any(seen.startswith(message) for seen in found):
                found.append(message + where)

    hyperparameters = config.get("hyperparameters") or {}
    if not isinstance(hyperparameters, Mapping):
        return [f"hyperparameters must be a mapping, got {type(hyperparameters).__name__}"]
    samples = hyperparameter_samples(hyperparameters)
    for hparams, where in samples:
        add(_every_error(parse_hyperparameters, hparams, HYPERPARAMETER_KEYS, HYPERPARAMETERS,
                         r"hyperparameters? '([^']+)'"), where)
    data = config.get("data") or {}
    if not isinstance(data, Mapping):
        return found + [f"data: the section must be a mapping, got {type(data).__name__}"]
    # A bad backend is checked further as the fake one, which needs no other key.
    add(_every_error(DataSettings.from_mapping, data, field_names(DataSettings) | {TRAINER_KEY}, "data",
                     r"^data\.([A-Za-z_]+)", stand_ins={"backend": "fake"}))
    trainer = data.get(TRAINER_KEY) or {}
    if isinstance(trainer, Mapping):
        add(_every_error(RunSettings.from_mapping, trainer, field_names(RunSettings), f"data.{TRAINER_KEY}",
                         r"^data\.trainer\.([A-Za-z_]+)"))
    else:
        add([f"data.{TRAINER_KEY} must be a mapping, got {trainer!r}"])
    if not found:  # what only the whole experiment can refuse: settings of different sections together
        for hparams, where in samples:
            try:
                ExperimentSettings.from_config(config, hparams)
            except ValueError as error:
                add([str(error)], where)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Validate experiment configs offline: Determined 0.38.1's checks and this package's settings."
    )
    parser.add_argument("configs", nargs="+", type=Path, help="experiment config YAML files")
    args = parser.parse_args(argv)
    try:
        schemas = load_schemas()
    except (SchemasNotFoundError, SchemaChecksumError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = False
    for path in args.configs:
        try:
            with path.open() as f:
                config = yaml.safe_load(f)
        except (OSError, yaml.YAMLError) as err:
            print(f"{path}: cannot read: {err}", file=sys.stderr)
            failed = True
            continue
        problems = validate_config(config, schemas=schemas) + settings_errors(config)
        warnings = deprecated_fields(config) if isinstance(config, dict) else []
        for message in problems:
            print(f"{path}: error: {message}", file=sys.stderr)
        for message in warnings:
            print(f"{path}: deprecated: {message}", file=sys.stderr)
        failed = failed or bool(problems or warnings)
        if not (problems or warnings):
            print(f"{path}: valid")
    return 1 if failed else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # shows the one-time download
    sys.exit(main())
