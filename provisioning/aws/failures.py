"""Why EC2 would not give devdb an instance, in one sentence with advice that fits.

A launch fails for one of a few reasons, each with its own cure: the account's quota, EC2's
capacity, the spot price, the KMS key behind EBS encryption, or IAM. The error codes EC2 gave
(from the fleet and the plain requests) are kept in the sentence, so an operator can look
them up.
"""

from __future__ import annotations

from collections.abc import Sequence

QUOTA = {
    "MaxSpotInstanceCountExceeded",
    "VcpuLimitExceeded",
    "InstanceLimitExceeded",
    "MaxSpotFleetRequestCountExceeded",
}
CAPACITY = {
    "InsufficientInstanceCapacity",
    "InsufficientCapacity",
    "UnfulfillableCapacity",
    "InsufficientHostCapacity",
    "InsufficientReservedInstanceCapacity",
    "Unsupported",
}
PRICE = {"SpotMaxPriceTooLow"}
KEYS = {"KMS.DisabledException", "KMS.NotFoundException", "InvalidKMSKey.InvalidState"}
ACCESS = {"UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Blocked"}
# What trying another type or subnet can cure; anything else stops the search at once.
RETRYABLE = CAPACITY | PRICE


def launch_failure(codes: Sequence[str], types: Sequence[str], detail: str) -> str:
    """The sentence for a launch EC2 refused, from every error code it gave."""
    seen = ", ".join(dict.fromkeys(code for code in codes if code)) or "no error code"
    found = set(codes)
    if found & QUOTA:
        return (
            f"the AWS account's instance quota is used up ({seen}): destroy unused "
            "environments, or ask for more in Service Quotas (EC2, 'All Standard Spot "
            "Instance Requests' for spot)."
        )
    if found & KEYS or any(code.startswith("KMS") for code in found):
        return (
            f"EBS could not use its KMS key for the encrypted data volume ({seen}): let the "
            "EC2 service and devdb's roles use the account's default EBS key."
        )
    if found & ACCESS:
        return (
            f"AWS denied the launch ({seen}: {detail}): give devdb's role docs/iam-policy.json "
            "and check DEVDB_EC2_INSTANCE_PROFILE."
        )
    if found and found <= PRICE:
        return f"the spot price is above the allowed maximum for {', '.join(types)} ({seen})."
    if found and found <= RETRYABLE:
        return (
            f"EC2 has no spare capacity for {', '.join(types)} here now ({seen}): try again "
            "later or add instance types to DEVDB_EC2_INSTANCE_TYPES."
        )
    return f"EC2 refused the launch ({seen}: {detail})."


def early_death(instance_id: str, state: str, reason_code: str, reason: str) -> str:
    """The sentence for an instance that went away before it ran."""
    if reason_code == "Client.InternalError":
        return (
            f"the instance {instance_id} stopped at once ({reason or reason_code}): EBS "
            "usually cannot use the KMS key for its encrypted volume; let the EC2 service "
            "use the account's default EBS key."
        )
    if reason_code in ("Server.SpotInstanceTermination", "Server.InsufficientInstanceCapacity"):
        return (
            f"the spot instance {instance_id} was {state} before it started: capacity was "
            "taken back; try again."
        )
    shown = f" ({reason or reason_code})" if (reason or reason_code) else ""
    return f"the instance {instance_id} was {state} before it started{shown}."
