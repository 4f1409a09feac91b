#!/bin/bash
# gpujobs node bootstrap, run once as root by cloud-init or the startup script.
# Values are shell-quoted by gpujobs when it renders this file.
set -uo pipefail
JOB_ID=$JOB_ID
SSH_USER=$SSH_USER
ROOT=$ROOT
READY_FILE=$READY_FILE
SHUTDOWN_MINUTES="$SHUTDOWN_MINUTES"
SSH_PUBLIC_KEY=$SSH_PUBLIC_KEY
PORT_BAND="$PORT_BAND"
SSH_FROM=$SSH_FROM
GROUP_CIDR=$GROUP_CIDR
LOG="$$ROOT/bootstrap.log"

mkdir -p "$$ROOT"
exec >>"$$LOG" 2>&1
echo "gpujobs bootstrap for job $$JOB_ID: $$(date -u +%FT%TZ)"

# 1. The budget guard comes first, so that whatever fails below, the node still ends by itself
#    at budget.max_hours even if the client is gone. The provider makes a shutdown terminate
#    (AWS: instance-initiated shutdown behaviour; GCP: the instance stops, its GPU unbilled).
if [ -n "$$SHUTDOWN_MINUTES" ]; then
    shutdown -h "+$$SHUTDOWN_MINUTES" "gpujobs: budget.max_hours reached for $$JOB_ID" ||
        systemd-run --on-active="$${SHUTDOWN_MINUTES}m" /sbin/poweroff
fi

fail() {
    echo "bootstrap failed: $$1"
    echo "$$1" >"$$READY_FILE.failed"
    exit 1
}

# 2. A multi-node job's NCCL and Gloo listen on ephemeral ports; the group's firewall rule opens
#    only this band between the job's nodes, so the kernel must draw them from it.
if [ -n "$$PORT_BAND" ]; then
    sysctl -w net.ipv4.ip_local_port_range="$$PORT_BAND" ||
        fail "cannot set net.ipv4.ip_local_port_range to $$PORT_BAND"
fi

# 2b. A cloud with no firewall API (Paperspace) leaves the node open to the internet: the node
#    filters its own inbound traffic. SSH from the caller's address, everything from the job's
#    private network (its rendezvous and NCCL ports), replies to what the node sent; nothing
#    else. Before Docker or the workload can listen on anything.
filter_inbound() {
    iptables -N GPUJOBS_IN 2>/dev/null || iptables -F GPUJOBS_IN || return 1
    iptables -A GPUJOBS_IN -i lo -j ACCEPT || return 1
    iptables -A GPUJOBS_IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || return 1
    iptables -A GPUJOBS_IN -p icmp -j ACCEPT || return 1
    iptables -A GPUJOBS_IN -p tcp --dport 22 -s "$$SSH_FROM" -j ACCEPT || return 1
    if [ -n "$$GROUP_CIDR" ]; then
        iptables -A GPUJOBS_IN -s "$$GROUP_CIDR" -j ACCEPT || return 1
    fi
    iptables -A GPUJOBS_IN -j DROP || return 1
    iptables -C INPUT -j GPUJOBS_IN 2>/dev/null || iptables -I INPUT 1 -j GPUJOBS_IN
}
if [ -n "$$SSH_FROM" ]; then
    filter_inbound || fail "cannot filter inbound traffic with iptables"
fi

# 3. The login user: GCP's guest agent makes it from the ssh-keys metadata in the background, so
#    give it a minute to appear before anything is chowned to it.
for _ in $$(seq 60); do
    getent passwd "$$SSH_USER" >/dev/null && break
    sleep 1
done
getent passwd "$$SSH_USER" >/dev/null || fail "no user $$SSH_USER on this image"

# 4. The login user's key, for clouds that do not install it themselves.
if [ -n "$$SSH_PUBLIC_KEY" ]; then
    home=$$(getent passwd "$$SSH_USER" | cut -d: -f6)
    [ -n "$$home" ] || fail "no user $$SSH_USER on this image"
    install -d -m 0700 -o "$$SSH_USER" -g "$$SSH_USER" "$$home/.ssh"
    printf '%s\n' "$$SSH_PUBLIC_KEY" >>"$$home/.ssh/authorized_keys"
    chown "$$SSH_USER:$$SSH_USER" "$$home/.ssh/authorized_keys"
    chmod 0600 "$$home/.ssh/authorized_keys"
fi

# 5. The job's folders, owned by the login user.
install -d -m 0700 -o "$$SSH_USER" -g "$$SSH_USER" "$$ROOT/work" "$$ROOT/cache" ||
    fail "cannot make $$ROOT/work"

# 6. Docker with the NVIDIA runtime. GPU images ship both; a plain image gets them here.
if ! command -v docker >/dev/null 2>&1; then
    curl -fsSL https://get.docker.com | sh || fail "installing docker failed"
fi
if command -v nvidia-smi >/dev/null 2>&1 &&
    ! docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q nvidia; then
    if ! command -v nvidia-ctk >/dev/null 2>&1; then
        distribution=$$(. /etc/os-release; echo "$$ID$$VERSION_ID")
        curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey |
            gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg &&
            curl -fsSL "https://nvidia.github.io/libnvidia-container/$$distribution/libnvidia-container.list" |
            sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://#' \
                >/etc/apt/sources.list.d/nvidia-container-toolkit.list &&
            apt-get update -q && apt-get install -y -q nvidia-container-toolkit ||
            fail "installing the NVIDIA container toolkit failed"
    fi
    nvidia-ctk runtime configure --runtime=docker && systemctl restart docker ||
        fail "configuring docker's NVIDIA runtime failed"
fi
usermod -aG docker "$$SSH_USER" || fail "cannot add $$SSH_USER to the docker group"

date -u +%FT%TZ >"$$READY_FILE"
echo "bootstrap done"
