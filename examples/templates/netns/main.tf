# A workspace whose agent runs on the coderd host inside its own network namespace,
# behind a NAT: the agent sees only a veth link to the host (a /30), reaches the outside
# through the host's MASQUERADE rule, and cannot be reached from outside except through
# the mesh. This is the topology of a workspace behind a home router, which makes it the
# template for testing NAT traversal on one machine.
#
# Requirements: the provisioner runs as root; `ip` (iproute2), `iptables`, `setsid`,
# `nohup` and `setpriv` on the host. The template enables net.ipv4.ip_forward.
#
# The access URL: coderd listening on the host's loopback is not reachable from inside
# the namespace, so a loopback access URL (127.0.0.1 or localhost) is rewritten to the
# host end of the veth, and coderd must listen there too (e.g. on 0.0.0.0).
#
# Lifecycle: the directory survives stop/start and goes on delete, as in ../local; the
# namespace, veth, NAT rules and agent exist only while the workspace is started.

terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = ">= 2.0.0"
    }
  }
}

variable "workspaces_root" {
  type        = string
  default     = "/var/lib/coder-workspaces"
  description = "Directory holding one directory per workspace."
}

variable "subnet_pool" {
  type        = string
  default     = "10.213.0.0/16"
  description = "A /16 that each workspace takes a /30 from (picked from a hash of its id)."
  validation {
    condition     = can(cidrsubnet(var.subnet_pool, 14, 0)) && endswith(var.subnet_pool, "/16")
    error_message = "subnet_pool must be an IPv4 /16."
  }
}

variable "nameserver" {
  type        = string
  default     = ""
  description = "DNS server for the namespace (written to /etc/netns/NAME/resolv.conf). Empty: the host's resolv.conf, which fails if it points at a loopback resolver."
}

variable "agent_user" {
  type        = string
  default     = ""
  description = "Run the agent as this user (it must exist). Empty: the provisioner's user (root)."
}

variable "agent_arch" {
  type        = string
  default     = "amd64"
  description = "Architecture of the coderd host: amd64, arm64 or armv7."
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

data "coder_parameter" "shell_greeting" {
  name         = "shell_greeting"
  display_name = "Greeting"
  description  = "Printed by the startup script."
  type         = "string"
  default      = "hello from the namespace"
  mutable      = true
  validation {
    regex = "^[[:print:]]{0,80}$"
    error = "At most 80 printable characters."
  }
}

locals {
  id        = data.coder_workspace.me.id
  short     = substr(replace(local.id, "-", ""), 0, 8)
  netns     = "coder-${local.short}"
  veth_host = "cw${local.short}h" # interface names are limited to 15 bytes
  veth_ns   = "cw${local.short}n"
  subnet    = cidrsubnet(var.subnet_pool, 14, parseint(substr(sha256(local.id), 0, 4), 16) % 16384)
  host_ip   = cidrhost(local.subnet, 1)
  ns_ip     = cidrhost(local.subnet, 2)
  dir       = "${var.workspaces_root}/${local.id}"
  state_dir = "${local.dir}/.coder-agent"

  # Removing what setup creates; every step tolerates "already gone", so it is also run
  # before setup to clear leftovers of a crashed build.
  teardown = <<-EOT
    iptables -t nat -D POSTROUTING -s ${local.subnet} ! -o ${local.veth_host} -j MASQUERADE 2>/dev/null || true
    iptables -D FORWARD -i ${local.veth_host} -j ACCEPT 2>/dev/null || true
    iptables -D FORWARD -o ${local.veth_host} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT 2>/dev/null || true
    ip link del ${local.veth_host} 2>/dev/null || true
    ip netns del ${local.netns} 2>/dev/null || true
    rm -rf /etc/netns/${local.netns}
  EOT

  setup = <<-EOT
    set -eu
    if [ "$(id -u)" != 0 ]; then
      echo "the netns template needs root (ip netns, iptables)" >&2
      exit 1
    fi
    for tool in ip iptables setsid nohup; do
      command -v "$tool" >/dev/null 2>&1 || { echo "missing $tool on the host" >&2; exit 1; }
    done
    ${local.teardown}
    ip netns add ${local.netns}
    ip link add ${local.veth_host} type veth peer name ${local.veth_ns}
    ip link set ${local.veth_ns} netns ${local.netns}
    ip addr add ${local.host_ip}/30 dev ${local.veth_host}
    ip link set ${local.veth_host} up
    ip -n ${local.netns} link set lo up
    ip -n ${local.netns} addr add ${local.ns_ip}/30 dev ${local.veth_ns}
    ip -n ${local.netns} link set ${local.veth_ns} up
    ip -n ${local.netns} route add default via ${local.host_ip}
    sysctl -qw net.ipv4.ip_forward=1
    iptables -t nat -A POSTROUTING -s ${local.subnet} ! -o ${local.veth_host} -j MASQUERADE
    iptables -I FORWARD -i ${local.veth_host} -j ACCEPT
    iptables -I FORWARD -o ${local.veth_host} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
    if [ -n "${var.nameserver}" ]; then
      mkdir -p /etc/netns/${local.netns}
      echo "nameserver ${var.nameserver}" > /etc/netns/${local.netns}/resolv.conf
    fi
    echo "namespace ${local.netns}: ${local.ns_ip} behind ${local.host_ip} (${local.subnet})"
  EOT

  # Loopback access URLs point at the host end of the veth instead.
  init_script = replace(
    coder_agent.main.init_script,
    "/\\/\\/(127\\.0\\.0\\.1|localhost)([:/'])/",
    "//${local.host_ip}$${2}",
  )
}

resource "coder_agent" "main" {
  os   = "linux"
  arch = var.agent_arch
  dir  = local.dir
  env = {
    GIT_AUTHOR_NAME  = data.coder_workspace_owner.me.name
    GIT_AUTHOR_EMAIL = data.coder_workspace_owner.me.email
  }
  startup_script = <<-EOT
    echo "${data.coder_parameter.shell_greeting.value}"
    ip -brief address 2>/dev/null || true
  EOT

  metadata {
    key          = "address"
    display_name = "Namespace address"
    script       = "echo ${local.ns_ip}"
    interval     = 60
    timeout      = 1
  }
}

# Set in every session of the agent.
resource "coder_env" "editor" {
  agent_id = coder_agent.main.id
  name     = "EDITOR"
  value    = "vi"
}

# Its own log source in the agent's logs: what the namespace can reach.
resource "coder_script" "network" {
  agent_id     = coder_agent.main.id
  display_name = "Network"
  run_on_start = true
  timeout      = 30
  script       = <<-EOT
    echo "workspace address ${local.ns_ip}"
    ip -brief route 2>/dev/null || true
  EOT
}

resource "coder_script" "goodbye" {
  agent_id     = coder_agent.main.id
  display_name = "Goodbye"
  run_on_stop  = true
  timeout      = 10
  script       = "echo \"workspace ${data.coder_workspace.me.name} is stopping\""
}

resource "coder_app" "shell" {
  agent_id     = coder_agent.main.id
  slug         = "top"
  display_name = "top"
  icon         = "/icon/terminal.svg"
  command      = "top"
}

resource "terraform_data" "home" {
  input = {
    root = var.workspaces_root
    dir  = local.dir
    user = var.agent_user
  }

  provisioner "local-exec" {
    command = <<-EOT
      set -eu
      mkdir -p "$DIR"
      if [ -n "$AGENT_USER" ]; then chown "$AGENT_USER:" "$DIR"; fi
    EOT
    environment = {
      DIR        = self.input.dir
      AGENT_USER = self.input.user
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = <<-EOT
      case "$DIR" in
        "$ROOT"/?*) rm -rf -- "$DIR" ;;
        *) echo "refusing to remove $DIR: not under $ROOT" >&2 ;;
      esac
    EOT
    environment = {
      ROOT = self.input.root
      DIR  = self.input.dir
    }
  }
}

resource "terraform_data" "network" {
  count = data.coder_workspace.me.start_count
  input = {
    setup    = local.setup
    teardown = local.teardown
  }

  provisioner "local-exec" {
    command = self.input.setup
  }

  provisioner "local-exec" {
    when    = destroy
    command = self.input.teardown
  }
}

resource "terraform_data" "agent" {
  count      = data.coder_workspace.me.start_count
  depends_on = [terraform_data.home, terraform_data.network]

  triggers_replace = [coder_agent.main.id, local.init_script, terraform_data.network[0].id]

  input = {
    netns     = local.netns
    dir       = local.dir
    user      = var.agent_user
    state_dir = local.state_dir
    pid_file  = "${local.state_dir}/agent.pid"
    log_file  = "${local.state_dir}/agent.log"
  }

  provisioner "local-exec" {
    # Same detaching as ../local, entered into the namespace first. `ip netns exec`,
    # `setpriv` and `setsid` all exec in place, so $! is the agent's session leader.
    command = <<-EOT
      set -eu
      mkdir -p "$STATE_DIR"
      printf '%s\n' "$INIT_SCRIPT" > "$STATE_DIR/init.sh"
      chmod 0755 "$STATE_DIR/init.sh"
      unset INIT_SCRIPT
      if [ -n "$AGENT_USER" ]; then
        chown -R "$AGENT_USER:" "$STATE_DIR"
        export HOME="$DIR" USER="$AGENT_USER"
        set -- setpriv --reuid="$AGENT_USER" --regid="$(id -g "$AGENT_USER")" --init-groups
      else
        export HOME="$DIR"
        set --
      fi
      cd "$DIR"
      nohup ip netns exec "$NETNS" "$@" setsid /bin/sh "$STATE_DIR/init.sh" >>"$LOG_FILE" 2>&1 </dev/null &
      echo "$!" > "$PID_FILE"
      echo "agent started in $NETNS with pid $!, logging to $LOG_FILE"
    EOT
    environment = {
      NETNS             = self.input.netns
      DIR               = self.input.dir
      AGENT_USER        = self.input.user
      STATE_DIR         = self.input.state_dir
      PID_FILE          = self.input.pid_file
      LOG_FILE          = self.input.log_file
      INIT_SCRIPT       = local.init_script
      CODER_AGENT_TOKEN = coder_agent.main.token
      # The downloaded binary lives with the workspace, not in a fresh temp dir per start.
      CODER_AGENT_BINARY_DIR = self.input.state_dir
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = <<-EOT
      [ -s "$PID_FILE" ] || exit 0
      pid=$(cat "$PID_FILE")
      case "$pid" in
        ''|*[!0-9]*) echo "ignoring malformed pid file $PID_FILE" >&2; rm -f "$PID_FILE"; exit 0 ;;
      esac
      if kill -TERM "-$pid" 2>/dev/null; then
        i=0
        while kill -0 "-$pid" 2>/dev/null && [ "$i" -lt 10 ]; do
          sleep 1
          i=$((i + 1))
        done
        kill -KILL "-$pid" 2>/dev/null || true
        echo "agent (pid $pid) stopped"
      fi
      rm -f "$PID_FILE"
    EOT
    environment = {
      PID_FILE = self.input.pid_file
    }
  }
}

resource "coder_metadata" "network" {
  count       = data.coder_workspace.me.start_count
  resource_id = terraform_data.network[0].id
  item {
    key   = "namespace"
    value = local.netns
  }
  item {
    key   = "address"
    value = "${local.ns_ip} (NAT via ${local.host_ip})"
  }
}
