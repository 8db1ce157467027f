"""The JSON of drives, drive items and sharing permissions, as Graph v1.0 answers them.

Shapes follow https://learn.microsoft.com/graph/api/resources/driveitem and
https://learn.microsoft.com/graph/api/resources/drive for OneDrive for Business
(``driveType`` ``business``, eTag ``"{GUID},n"``, cTag ``"c:{GUID},n"``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .drive_store import Drive, DriveItem, DriveStore, identity_of, personal_site
from .state import graph_time

GRAPH = "https://graph.microsoft.com/v1.0"
# Office documents open in the browser editor (Doc.aspx); anything else opens its path.
OFFICE_EXTENSIONS = {"doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "docm", "xlsm", "pptm"}
QUOTA_TOTAL = 1_099_511_627_776  # 1 TiB, the default OneDrive for Business quota


def render_drive(drive: Drive, store: DriveStore) -> dict[str, Any]:
    used = sum(i.size for i in drive.items.values() if not i.deleted)
    deleted = sum(i.size for i in drive.items.values() if i.deleted)
    return {
        "@odata.context": f"{GRAPH}/$metadata#drives/$entity",
        "id": drive.id,
        "driveType": "business",
        "name": "OneDrive",
        "description": "",
        "createdDateTime": graph_time(drive.created),
        "lastModifiedDateTime": graph_time(max((i.modified for i in drive.items.values()), default=drive.created)),
        "webUrl": drive.web_url,
        "createdBy": {"user": {"displayName": "System Account"}},
        "owner": identity_of(drive.owner),
        "quota": {"deleted": deleted, "remaining": QUOTA_TOTAL - used, "state": "normal", "total": QUOTA_TOTAL,
                  "used": used},
    }


def web_url(drive: Drive, store: DriveStore, item: DriveItem) -> str:
    if item.parent_id is None:
        return drive.web_url
    ext = item.name.rpartition(".")[2].lower() if "." in item.name else ""
    site = f"https://contoso-my.sharepoint.com/personal/{personal_site(drive.owner)}"
    if not item.is_folder and ext in OFFICE_EXTENSIONS:
        return (f"{site}/_layouts/15/Doc.aspx?sourcedoc=%7B{item.uid}%7D&file={quote(item.name)}"
                "&action=default&mobileredirect=true")
    return drive.web_url + quote(store.path_of(drive, item)[len("/drive/root:"):])


def render_item(drive: Drive, store: DriveStore, item: DriveItem, *, in_delta: bool = False,
                download_url: str | None = None, delta_ctag: bool = False) -> dict[str, Any]:
    """One driveItem. ``in_delta``: as the drive delta returns it (no ``parentReference.path``;
    OneDrive for Business also leaves out ``cTag``, and ``name`` on deleted items)."""
    parent: dict[str, Any] = {"driveType": "business", "driveId": drive.id}
    if item.parent_id is not None:
        parent_item = drive.items[item.parent_id]
        parent["id"] = parent_item.id
        parent["name"] = "Documents" if parent_item.parent_id is None else parent_item.name
        if not in_delta:
            parent["path"] = store.path_of(drive, parent_item)
    out: dict[str, Any] = {
        "@odata.etag": item.etag,
        "id": item.id,
        "name": item.name,
        "eTag": item.etag,
        "cTag": item.ctag,
        "createdDateTime": graph_time(item.created),
        "lastModifiedDateTime": graph_time(item.modified),
        "size": item.size if not item.is_folder else _folder_size(drive, store, item),
        "webUrl": web_url(drive, store, item),
        "createdBy": item.created_by,
        "lastModifiedBy": item.modified_by,
        "parentReference": parent,
        "fileSystemInfo": {"createdDateTime": graph_time(item.created),
                           "lastModifiedDateTime": graph_time(item.modified)},
    }
    if item.parent_id is None:
        out["root"] = {}
    if item.is_folder:
        out["folder"] = {"childCount": len(store.children(drive, item))}
    else:
        out["file"] = {"mimeType": item.mime_type, "hashes": {"quickXorHash": item.quick_xor}}
        if download_url is not None:
            out["@microsoft.graph.downloadUrl"] = download_url
    if in_delta:
        if not delta_ctag:
            out.pop("cTag")
        if item.deleted:
            out["deleted"] = {"state": "deleted"}
            out.pop("name")
            out.pop("cTag", None)
            out.pop("@microsoft.graph.downloadUrl", None)
    return out


def _folder_size(drive: Drive, store: DriveStore, folder: DriveItem) -> int:
    total = 0
    pending = [folder]
    while pending:
        current = pending.pop()
        for child in store.children(drive, current):
            if child.is_folder:
                pending.append(child)
            else:
                total += child.size
    return total


def select_fields(entity: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if not select:
        return entity
    wanted = {name.lower() for name in select} | {"id", "@odata.etag", "@odata.context"}
    return {k: v for k, v in entity.items() if k.lower() in wanted}
