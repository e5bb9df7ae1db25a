"""[cloud_init]: the NoCloud seed each machine of a fleet gets (user data, meta data, network config)."""

from __future__ import annotations

from imagebuilder import values
from imagebuilder.recipe.model import CloudInit
from imagebuilder.recipe.tables import Table
from imagebuilder.values import ArgContext

_USER_DATA_HEADERS = ("#cloud-config", "#!", "#include", "#cloud-boothook", "#part-handler", "Content-Type:",
                      "## template: jinja")


def parse_cloud_init(table: Table | None, ctx: ArgContext) -> CloudInit | None:
    """[cloud_init]: user_data and network_config (a file, or an inline table), meta_data (a table)."""
    if table is None:
        return None
    files: list[values.HostFile] = []
    user_data = _cloud_document(table, "user_data", ctx, files, user_data=True)
    network_config = _cloud_document(table, "network_config", ctx, files, user_data=False)
    meta = table.get("meta_data", dict, {})
    for key, value in meta.items():
        if isinstance(value, (dict, list)):
            raise table.error("meta_data", f"'{key}': expected a string, a number or true/false")
    table.finish()
    return CloudInit(user_data, tuple(meta.items()), network_config, tuple(files))


def _cloud_document(table: Table, key: str, ctx: ArgContext, files: list[values.HostFile],
                    user_data: bool) -> str | None:
    import yaml

    value = table.get(key, (str, dict))
    if value is None:
        return None
    if isinstance(value, dict):
        text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)
        return "#cloud-config\n" + text if user_data else text
    step_ctx = ctx.fresh()
    try:
        path = values.host_path(value, step_ctx)
        text = path.read_text(encoding="utf-8")
    except ValueError as exc:
        raise table.error(key, str(exc)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise table.error(key, f"cannot read '{value}' as UTF-8 text: {exc}") from None
    files += step_ctx.host_files
    first = text.split("\n", 1)[0].strip()
    if user_data and not first.startswith(_USER_DATA_HEADERS):
        raise table.error(key, f"'{value}' starts with {first[:40]!r}; cloud-init knows user data by its first "
                               "line: #cloud-config, #!, #include, Content-Type: …")
    if not user_data or first.startswith("#cloud-config"):
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise table.error(key, f"'{value}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(loaded, dict):
            raise table.error(key, f"'{value}' must hold a YAML mapping (key: value lines)")
    return text
