"""Where moto stops short of EC2's documented behaviour, and devdb relies on it.

Installed into the session's moto server (same process) by `model_ec2()`:

- `CreateLaunchTemplateVersion` with `SourceVersion` starts from that version's data; the
  request's `LaunchTemplateData` overrides it key by key. moto ignores `SourceVersion`.
- `DeleteLaunchTemplateVersions` exists, and refuses the default version, as EC2 does.
  A deleted version is neither described nor launched from.
"""

from __future__ import annotations

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.exceptions import InvalidLaunchTemplateVersionNotFound
from moto.ec2.models.launch_templates import LaunchTemplate, LaunchTemplateBackend
from moto.ec2.responses.launch_templates import LaunchTemplates


def _template(response: Any) -> LaunchTemplate:
    name = response._get_param("LaunchTemplateName")
    if name:
        return response.ec2_backend.get_launch_template_by_name(name)  # type: ignore[no-any-return]
    return response.ec2_backend.get_launch_template(  # type: ignore[no-any-return]
        response._get_param("LaunchTemplateId")
    )


def _deleted(template: LaunchTemplate) -> set[int]:
    found: set[int] = template.__dict__.setdefault("devdb_deleted", set())
    return found


def create_launch_template_version(self: Any) -> ActionResult:
    template = _template(self)
    data = dict(self._get_param("LaunchTemplateData", {}))
    source = self._get_param("SourceVersion")
    if source:
        data = {**template.get_version(source).data, **data}
    version = template.create_version(data, self._get_param("VersionDescription"))
    return ActionResult(
        {
            "LaunchTemplateVersion": {
                "CreateTime": version.create_time,
                "DefaultVersion": template.is_default(version),
                "LaunchTemplateData": version.data,
                "LaunchTemplateId": template.id,
                "LaunchTemplateName": template.name,
                "VersionDescription": version.description,
                "VersionNumber": version.number,
            }
        }
    )


def delete_launch_template_versions(self: Any) -> ActionResult:
    template = _template(self)
    done, refused = [], []
    for number in self._get_param("Versions", []):
        entry = {
            "LaunchTemplateId": template.id,
            "LaunchTemplateName": template.name,
            "VersionNumber": int(number),
        }
        if int(number) == template.default_version_number:
            refused.append(
                {
                    **entry,
                    "ResponseError": {
                        "Code": "launchTemplateVersionIsDefault",
                        "Message": "the default version cannot be deleted",
                    },
                }
            )
        else:
            _deleted(template).add(int(number))
            done.append(entry)
    return ActionResult(
        {
            "SuccessfullyDeletedLaunchTemplateVersions": done,
            "UnsuccessfullyDeletedLaunchTemplateVersions": refused,
        }
    )


def model_ec2() -> None:
    if getattr(LaunchTemplates, "devdb_modelled", False):
        return
    LaunchTemplates.create_launch_template_version = create_launch_template_version  # type: ignore[method-assign]
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions  # type: ignore[attr-defined]

    get_version = LaunchTemplate.get_version

    def live_version(self: LaunchTemplate, num: Any) -> Any:
        version = get_version(self, num)
        if version.number in _deleted(self):
            raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=str(num))
        return version

    describe = LaunchTemplateBackend.describe_launch_template_versions

    def live_versions(self: Any, *args: Any, **kwargs: Any) -> Any:
        return [
            (template, version)
            for template, version in describe(self, *args, **kwargs)
            if version.number not in _deleted(template)
        ]

    LaunchTemplate.get_version = live_version  # type: ignore[method-assign]
    LaunchTemplateBackend.describe_launch_template_versions = live_versions  # type: ignore[method-assign]
    LaunchTemplates.devdb_modelled = True  # type: ignore[attr-defined]
