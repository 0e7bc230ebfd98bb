#!/bin/bash
# devdb instance bootstrap: prepare the data volume, then restore one snapshot with the agent
# (or, on a volume made from a golden EBS snapshot, only start it).
# Rendered per environment by provisioning/aws/userdata.py; it holds no secret (the agent
# reads the database password from SSM Parameter Store with the instance's role).
set -euo pipefail
# A failing step says so on the console, where devdb looks while the instance boots.
trap 'echo "devdb agent: failed: the user data stopped at line $LINENO: $BASH_COMMAND" >&2' ERR

export AWS_DEFAULT_REGION=@REGION@
export DEVDB_AGENT_BUCKET=@BUCKET@
export DEVDB_AGENT_PREFIX=@PREFIX@
export DEVDB_AGENT_SNAPSHOT=@SNAPSHOT@
export DEVDB_AGENT_PARAMETER=@PARAMETER@
export DEVDB_AGENT_DATABASE=@DATABASE@
export DEVDB_AGENT_USER=@USER@
# 1 on a golden build: restore, settle, stop cleanly, then power off so the volume can be
# snapshotted (the instance stops rather than terminates).
export DEVDB_AGENT_GOLDEN=@GOLDEN@
# Where the data lives and where the server listens; set beforehand to run elsewhere.
export DEVDB_AGENT_ROOT="${DEVDB_AGENT_ROOT:-/var/lib/devdb-agent}"
export DEVDB_AGENT_PORT="${DEVDB_AGENT_PORT:-5432}"
export DEVDB_AGENT_LISTEN="${DEVDB_AGENT_LISTEN:-*}"
data_device="${DEVDB_DATA_DEVICE:-}"  # "none": no separate disk (a stand-in host)

# The gp3 data volume, found by what it is, never by name order: the one EBS volume
# (/dev/disk/by-id names it by volume id) that does not hold the root filesystem. Instance
# storage has other ids; Xen types without NVMe show it as /dev/xvdf.
if [ -z "$data_device" ]; then
  root_disk="$(lsblk -no PKNAME "$(findmnt -no SOURCE /)" 2>/dev/null || true)"
  found=""
  for link in /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol*; do
    [ -e "$link" ] || continue
    case "$link" in *-part[0-9]*) continue ;; esac
    disk="$(readlink -f "$link")"
    if [ "$(basename "$disk")" != "$root_disk" ]; then
      found="$found $disk"
    fi
  done
  found="$(echo "$found" | tr ' ' '\n' | sed '/^$/d' | sort -u)"
  if [ -z "$found" ] && [ -b /dev/xvdf ]; then
    found=/dev/xvdf
  fi
  count="$(echo "$found" | sed '/^$/d' | wc -l)"
  if [ "$count" -ne 1 ]; then
    echo "devdb agent: failed: expected one EBS data volume besides the root disk, found $count" >&2
    exit 1
  fi
  data_device="$found"
fi
if [ "$data_device" != none ] && ! mountpoint -q "$DEVDB_AGENT_ROOT"; then
  if ! blkid "$data_device" >/dev/null 2>&1; then
    # XFS with reflink where the image has it: a reset's copy of the golden data directory
    # then shares its blocks and takes no time.
    if command -v mkfs.xfs >/dev/null 2>&1; then
      mkfs.xfs -q -f -m reflink=1 "$data_device"
    else
      mkfs.ext4 -q -F "$data_device"
    fi
  fi
  mkdir -p "$DEVDB_AGENT_ROOT"
  mount -o noatime "$data_device" "$DEVDB_AGENT_ROOT"
  # Mounted again at boot, so a reboot only starts the server again.
  uuid="$(blkid -s UUID -o value "$data_device")"
  if ! grep -q "UUID=$uuid" /etc/fstab; then
    echo "UUID=$uuid $DEVDB_AGENT_ROOT auto noatime,nofail 0 2" >> /etc/fstab
  fi
fi

# Expiry on the instance itself, for when the bot is down: once past its devdb:expires tag
# (which `devdb extend` moves) by the grace, it powers off, and a spot instance's shutdown
# terminates it. The tag is read from the instance metadata (tags are enabled there).
expiry_watch() {
  local imds=http://169.254.169.254/latest token expires
  while sleep 300; do
    token="$(curl -sf -X PUT "$imds/api/token" -H 'X-aws-ec2-metadata-token-ttl-seconds: 60')" ||
      continue
    expires="$(curl -sf -H "X-aws-ec2-metadata-token: $token" \
      "$imds/meta-data/tags/instance/devdb:expires")" || continue
    if [ "$(date +%s)" -gt "$(($(date -d "$expires" +%s) + DEVDB_AGENT_EXPIRY_GRACE))" ]; then
      echo "devdb agent: past its expiry ($expires) and the grace: powering off" >&2
      ${DEVDB_AGENT_POWEROFF:-poweroff}
    fi
  done
}
export DEVDB_AGENT_EXPIRY_GRACE=@GRACE@
if [ "$DEVDB_AGENT_GOLDEN" != 1 ] && [ "${DEVDB_AGENT_EXPIRY_WATCH:-1}" = 1 ]; then
  export -f expiry_watch
  setsid bash -c expiry_watch </dev/null >>/var/log/devdb-expiry.log 2>&1 &
fi

if ! command -v devdb >/dev/null 2>&1; then
  echo "devdb agent: failed: the devdb command is not installed on this image" >&2
  exit 1
fi
# User data runs at the first boot only: after a reboot, systemd starts the agent again (the
# volume is mounted by fstab); it finds its status ready and only starts the server.
if [ "$DEVDB_AGENT_GOLDEN" != 1 ] && [ -d /run/systemd/system ]; then  # systemd runs here
  env | grep -E '^(DEVDB_AGENT_|AWS_DEFAULT_REGION=)' > /etc/devdb-agent.env
  cat > /etc/systemd/system/devdb-agent.service <<UNIT
[Unit]
Description=devdb agent: start this environment's PostgreSQL again after a reboot
After=network-online.target local-fs.target
Wants=network-online.target

[Service]
EnvironmentFile=/etc/devdb-agent.env
ExecStart=$(command -v devdb) agent restore --jobs $(nproc)
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable devdb-agent.service
fi
devdb agent restore --jobs "$(nproc)"
if [ "$DEVDB_AGENT_GOLDEN" = 1 ]; then
  sync
  ${DEVDB_AGENT_POWEROFF:-poweroff}
fi
