"""Small XForms and submissions for server tests (pyxform-shaped, written by hand)."""

from __future__ import annotations

import uuid


def xform(
    form_id: str = "household",
    version: str = "1",
    *,
    title: str = "Household visit",
    public_key: str | None = None,
    media: tuple[str, ...] = (),
    entity_list: str | None = None,
) -> bytes:
    """A minimal XForm with a photo question, optional key, media and entity-list references."""
    submission = (
        f'<submission method="post" base64RsaPublicKey="{public_key}"/>' if public_key else ""
    )
    extra_instances = ""
    if entity_list:
        extra_instances += f'<instance id="{entity_list}" src="jr://file-csv/{entity_list}.csv"/>'
    for name in media:
        extra_instances += f'<instance id="m{abs(hash(name))}" src="jr://file/{name}"/>'
    return (
        '<?xml version="1.0"?>\n'
        '<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" '
        'xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms">'
        f"<h:head><h:title>{title}</h:title><model>{submission}"
        f'<instance><data id="{form_id}" version="{version}"><name/><photo/>'
        "<meta><instanceID/><instanceName/></meta></data></instance>"
        f"{extra_instances}"
        '<bind nodeset="/data/name" type="string"/>'
        '<bind nodeset="/data/photo" type="binary"/>'
        '<bind nodeset="/data/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/>'
        "</model></h:head><h:body>"
        '<input ref="/data/name"><label>Name</label></input>'
        '<upload ref="/data/photo" mediatype="image/*"><label>Photo</label></upload>'
        "</h:body></h:html>"
    ).encode()


def instance(
    form_id: str = "household",
    version: str = "1",
    *,
    instance_id: str | None = None,
    name: str = "Fictional Person",
    photo: str = "",
    deprecated_id: str | None = None,
) -> bytes:
    """A plaintext JavaRosa-style submission."""
    instance_id = instance_id or f"uuid:{uuid.uuid4()}"
    dep = f"<deprecatedID>{deprecated_id}</deprecatedID>" if deprecated_id else ""
    return (
        "<?xml version='1.0' encoding='UTF-8' ?>"
        f'<data id="{form_id}" version="{version}"><name>{name}</name><photo>{photo}</photo>'
        f"<meta><instanceID>{instance_id}</instanceID>{dep}"
        "<instanceName>visit</instanceName></meta></data>"
    ).encode()
