# A workspace that is a Docker container on the coderd host, from a locally built image
# (./build-image.sh: Debian with bash, git, curl, OpenSSH client and sudo; no registry).
#
# - The home volume (`terraform_data.home`, a named volume per workspace id) holds
#   /home/<owner> and lives as long as the workspace: it survives stop/start and is
#   removed when the workspace is deleted.
# - The container (`terraform_data.container`) exists only while the workspace is
#   started (`count = start_count`): creating it runs `docker run`, destroying it (stop
#   or delete) removes it. Its boot script creates the owner's user (uid 1000 when free,
#   passwordless sudo) and runs the agent's init_script as that user.
# - Containers and volumes carry the labels `org.coder.workspace.id`,
#   `org.coder.workspace.owner` and `org.coder.managed=docker-template`, so
#   `docker ps -a --filter label=org.coder.managed=docker-template` lists them all.
#
# The container sits on Docker's default bridge. The access URL must be reachable from
# it: a loopback access URL (127.0.0.1 or localhost) is rewritten to
# host.docker.internal (the bridge's gateway, i.e. the host), which reaches coderd only
# if coderd listens there too (e.g. --http-address 0.0.0.0:3000). Best is an access URL
# that both users and containers reach, such as the host's own address: the relay and
# STUN addresses that agents get are derived from it.
#
# Requirements: the provisioner's user may run `docker` (root or the docker group); the
# image exists on the host (run ./build-image.sh once). Only terraform's built-in
# provider and coder/coder are used, so it works offline.

terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = ">= 2.0.0"
    }
  }
}

variable "agent_arch" {
  type        = string
  default     = "amd64"
  description = "Architecture of the Docker host: amd64, arm64 or armv7."
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

data "coder_parameter" "image" {
  name         = "image"
  display_name = "Image"
  description  = "Docker image of the workspace: ./build-image.sh builds the default. Another image needs sh, curl or wget, useradd, setpriv and sudo."
  type         = "string"
  default      = "coder-workspace:latest"
  mutable      = true
  validation {
    regex = "^[a-z0-9][a-z0-9._/:-]{0,127}(@sha256:[0-9a-f]{64})?$"
    error = "A Docker image reference such as coder-workspace:latest."
  }
}

data "coder_parameter" "cpus" {
  name         = "cpus"
  display_name = "CPUs"
  description  = "CPU cores the workspace may use (docker run --cpus)."
  type         = "number"
  default      = "2"
  mutable      = true
  validation {
    min = 1
    max = 16
  }
}

data "coder_parameter" "memory" {
  name         = "memory"
  display_name = "Memory (GiB)"
  description  = "Memory limit of the workspace in GiB (docker run --memory)."
  type         = "number"
  default      = "2"
  mutable      = true
  validation {
    min = 1
    max = 64
  }
}

locals {
  id    = data.coder_workspace.me.id
  owner = lower(data.coder_workspace_owner.me.name)
  # A Linux user name: Coder user names are letters, digits and hyphens; one that
  # starts with a digit or is an account of the image gets a prefix.
  system_users = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "_apt", "nobody", "gnats", "sshd", "messagebus"]
  user         = substr(can(regex("^[a-z_]", local.owner)) && !contains(local.system_users, local.owner) ? local.owner : "coder-${local.owner}", 0, 32)
  home         = "/home/${local.user}"
  container    = "coder-${local.id}"
  volume       = "coder-${local.id}-home"
  labels = join(" ", [
    "--label", "org.coder.managed=docker-template",
    "--label", "org.coder.workspace.id=${local.id}",
    "--label", "org.coder.workspace.owner=${local.owner}",
  ])

  # Loopback access URLs point at the host as the container sees it.
  init_script = replace(
    coder_agent.main.init_script,
    "/\\/\\/(127\\.0\\.0\\.1|localhost)([:/'])/",
    "//host.docker.internal$${2}",
  )

  # PID 2 of the container (docker's init is PID 1 and reaps zombies): make the user,
  # then become the agent. Runs as root; the values come from the environment.
  boot = <<-EOT
    set -eu
    if ! id -u "$CODER_USER" >/dev/null 2>&1; then
      uid_opt=""
      getent passwd 1000 >/dev/null || uid_opt="--uid 1000"
      useradd $uid_opt --user-group --home-dir "$CODER_HOME" --no-create-home --shell /bin/bash "$CODER_USER"
    fi
    if getent group sudo >/dev/null; then usermod -aG sudo "$CODER_USER"; fi
    mkdir -p /etc/sudoers.d
    echo "$CODER_USER ALL=(ALL:ALL) NOPASSWD: ALL" >/etc/sudoers.d/90-coder-workspace
    chmod 0440 /etc/sudoers.d/90-coder-workspace
    # A new volume is an empty directory owned by root: give it to the user, with skel.
    if [ "$(stat -c %U "$CODER_HOME")" != "$CODER_USER" ]; then
      cp -rn /etc/skel/. "$CODER_HOME"/ 2>/dev/null || true
      chown -R "$CODER_USER:" "$CODER_HOME"
    fi
    chmod 0700 "$CODER_HOME"
    printf '%s\n' "$CODER_INIT_SCRIPT" >/tmp/coder-init.sh
    chmod 0755 /tmp/coder-init.sh
    unset CODER_INIT_SCRIPT CODER_BOOT
    cd "$CODER_HOME"
    export HOME="$CODER_HOME" USER="$CODER_USER" LOGNAME="$CODER_USER" SHELL=/bin/bash
    exec setpriv --reuid="$CODER_USER" --regid="$(id -g "$CODER_USER")" --init-groups /bin/sh /tmp/coder-init.sh
  EOT
}

resource "coder_agent" "main" {
  os   = "linux"
  arch = var.agent_arch
  dir  = local.home
  env = {
    GIT_AUTHOR_NAME     = data.coder_workspace_owner.me.name
    GIT_AUTHOR_EMAIL    = data.coder_workspace_owner.me.email
    GIT_COMMITTER_NAME  = data.coder_workspace_owner.me.name
    GIT_COMMITTER_EMAIL = data.coder_workspace_owner.me.email
  }
  startup_script_behavior = "non-blocking"
  startup_script          = <<-EOT
    echo "workspace ${data.coder_workspace.me.name} of ${data.coder_workspace_owner.me.name} is up in container $(hostname)"
  EOT

  metadata {
    key          = "load"
    display_name = "Load average"
    script       = "cut -d' ' -f1-3 /proc/loadavg"
    interval     = 10
    timeout      = 1
  }
  metadata {
    key          = "home"
    display_name = "Home size"
    script       = "du -sh \"$HOME\" 2>/dev/null | cut -f1"
    interval     = 60
    timeout      = 10
  }
}

# The home volume. Removed (with everything in it) when the workspace is deleted.
resource "terraform_data" "home" {
  input = {
    volume = local.volume
    labels = local.labels
  }

  provisioner "local-exec" {
    command = "docker volume create $LABELS \"$VOLUME\" >/dev/null && echo \"volume $VOLUME\""
    environment = {
      VOLUME = self.input.volume
      LABELS = self.input.labels
    }
  }

  provisioner "local-exec" {
    when    = destroy
    command = "docker volume rm -f \"$VOLUME\" >/dev/null && echo \"volume $VOLUME removed\""
    environment = {
      VOLUME = self.input.volume
    }
  }
}

# The container: exists while the workspace is started.
resource "terraform_data" "container" {
  count      = data.coder_workspace.me.start_count
  depends_on = [terraform_data.home]

  # A new agent (new token), init script, image or limit makes a new container.
  triggers_replace = [
    coder_agent.main.id,
    local.init_script,
    local.boot,
    data.coder_parameter.image.value,
    data.coder_parameter.cpus.value,
    data.coder_parameter.memory.value,
  ]

  input = {
    container = local.container
  }

  provisioner "local-exec" {
    # The token and the scripts reach the container through the environment of
    # `docker run` (`-e NAME` copies it), never through its command line.
    command = <<-EOT
      set -eu
      command -v docker >/dev/null 2>&1 || { echo "docker is not installed on the provisioner's host" >&2; exit 1; }
      if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
        echo "image $IMAGE is missing: build it with build-image.sh (examples/templates/docker)" >&2
        exit 1
      fi
      docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
      docker run --detach --init --name "$CONTAINER" --hostname "$HOSTNAME_" $LABELS \
        --cpus "$CPUS" --memory "$${MEMORY}g" \
        --add-host host.docker.internal:host-gateway \
        --volume "$VOLUME:$CODER_HOME" \
        -e CODER_AGENT_TOKEN -e CODER_INIT_SCRIPT -e CODER_USER -e CODER_HOME -e CODER_BOOT \
        "$IMAGE" /bin/sh -c 'eval "$CODER_BOOT"' >/dev/null
      echo "container $CONTAINER started from $IMAGE ($CPUS CPUs, $${MEMORY} GiB)"
    EOT
    environment = {
      CONTAINER         = self.input.container
      HOSTNAME_         = lower(data.coder_workspace.me.name)
      LABELS            = local.labels
      IMAGE             = data.coder_parameter.image.value
      CPUS              = data.coder_parameter.cpus.value
      MEMORY            = data.coder_parameter.memory.value
      VOLUME            = terraform_data.home.input.volume
      CODER_HOME        = local.home
      CODER_USER        = local.user
      CODER_INIT_SCRIPT = local.init_script
      CODER_AGENT_TOKEN = coder_agent.main.token
      CODER_BOOT        = local.boot
    }
  }

  provisioner "local-exec" {
    when = destroy
    # SIGTERM first (docker's init passes it to the agent), then remove.
    command = <<-EOT
      docker stop --time 10 "$CONTAINER" >/dev/null 2>&1 || true
      docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
      echo "container $CONTAINER removed"
    EOT
    environment = {
      CONTAINER = self.input.container
    }
  }
}

resource "coder_metadata" "container" {
  count       = data.coder_workspace.me.start_count
  resource_id = terraform_data.container[0].id
  item {
    key   = "image"
    value = data.coder_parameter.image.value
  }
  item {
    key   = "limits"
    value = "${data.coder_parameter.cpus.value} CPUs, ${data.coder_parameter.memory.value} GiB"
  }
}

resource "coder_metadata" "home" {
  resource_id = terraform_data.home.id
  item {
    key   = "volume"
    value = local.volume
  }
  item {
    key   = "user"
    value = local.user
  }
}
