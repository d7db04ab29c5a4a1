# A workspace that is a directory on the coderd host plus an agent process running in it.
#
# - The directory (`terraform_data.home`) lives as long as the workspace: it survives
#   stop/start and is removed when the workspace is deleted.
# - The agent process (`terraform_data.agent`) exists only while the workspace is started
#   (`count = start_count`): creating it runs the agent's init_script detached (setsid +
#   nohup, pid file, log file); destroying it (stop or delete) kills the process group.
#
# No isolation at all: the agent runs as the user that runs coderd's provisioner. Use it
# for development and tests; see ../netns for an agent in its own network namespace.
#
# Only terraform's built-in provider and coder/coder are used, so it works offline.

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
  default     = ""
  description = "Directory holding one directory per workspace. Empty means ~/coder-workspaces of the user running the provisioner."
}

variable "dotfiles_dir" {
  type        = string
  default     = ""
  description = "A directory (or git checkout) on the coderd host whose dotfiles are linked into each workspace at start; its install.sh, if executable, runs after. Empty: none."
}

variable "agent_arch" {
  type        = string
  default     = "amd64"
  description = "Architecture of the coderd host: amd64, arm64 or armv7."
}

data "coder_workspace" "me" {}
data "coder_workspace_owner" "me" {}

data "coder_parameter" "http_port" {
  name         = "http_port"
  display_name = "File server port"
  description  = "Port of the file server that the startup script starts in the workspace directory (needs python3)."
  type         = "number"
  default      = "8000"
  mutable      = true
  validation {
    min = 1024
    max = 65535
  }
}

locals {
  root      = var.workspaces_root != "" ? var.workspaces_root : pathexpand("~/coder-workspaces")
  dir       = "${local.root}/${data.coder_workspace.me.id}"
  state_dir = "${local.dir}/.coder-agent"
  http_port = data.coder_parameter.http_port.value
}

resource "coder_agent" "main" {
  os   = "linux"
  arch = var.agent_arch
  dir  = local.dir
  env = {
    GIT_AUTHOR_NAME     = data.coder_workspace_owner.me.name
    GIT_AUTHOR_EMAIL    = data.coder_workspace_owner.me.email
    GIT_COMMITTER_NAME  = data.coder_workspace_owner.me.name
    GIT_COMMITTER_EMAIL = data.coder_workspace_owner.me.email
  }
  startup_script_behavior = "non-blocking"
  startup_script          = <<-EOT
    set -e
    echo "workspace ${data.coder_workspace.me.name} of ${data.coder_workspace_owner.me.name} is up"
    if command -v python3 >/dev/null 2>&1; then
      nohup python3 -m http.server ${local.http_port} --bind 127.0.0.1 --directory "${local.dir}" >"${local.state_dir}/files.log" 2>&1 &
      echo $! >"${local.state_dir}/files.pid"
    else
      echo "python3 not found: the file server app will be unavailable"
    fi
  EOT
  # Runs when a stop or delete build begins, before terraform removes anything.
  shutdown_script = <<-EOT
    if [ -s "${local.state_dir}/files.pid" ]; then
      kill "$(cat "${local.state_dir}/files.pid")" 2>/dev/null && echo "file server stopped"
      rm -f "${local.state_dir}/files.pid"
    fi
  EOT

  metadata {
    key          = "load"
    display_name = "Load average"
    script       = "cut -d' ' -f1-3 /proc/loadavg"
    interval     = 10
    timeout      = 1
  }
  metadata {
    key          = "disk"
    display_name = "Workspace size"
    script       = "du -sh \"${local.dir}\" | cut -f1"
    interval     = 60
    timeout      = 10
  }
}

# Set in every session: SSH, `coder ssh WS -- cmd`, the web terminal, apps' commands.
resource "coder_env" "editor" {
  agent_id = coder_agent.main.id
  name     = "EDITOR"
  value    = "vi"
}

resource "coder_env" "project_dir" {
  agent_id = coder_agent.main.id
  name     = "PROJECT_DIR"
  value    = local.dir
}

# Its own log source ("Dotfiles") in the agent's logs.
resource "coder_script" "dotfiles" {
  agent_id     = coder_agent.main.id
  display_name = "Dotfiles"
  icon         = "/icon/dotfiles.svg"
  run_on_start = true
  timeout      = 300
  script       = <<-EOT
    src=${jsonencode(var.dotfiles_dir)}
    if [ -z "$src" ]; then
      echo "no dotfiles directory configured (template variable dotfiles_dir)"
      exit 0
    fi
    if [ ! -d "$src" ]; then
      echo "dotfiles directory $src does not exist; skipping"
      exit 0
    fi
    for f in "$src"/.[!.]*; do
      [ -e "$f" ] || continue
      case "$(basename "$f")" in .git) continue ;; esac
      ln -sfn "$f" "$HOME/$(basename "$f")" && echo "linked $(basename "$f")"
    done
    if [ -x "$src/install.sh" ]; then
      echo "running $src/install.sh"
      "$src/install.sh"
    fi
  EOT
}

resource "coder_app" "files" {
  agent_id     = coder_agent.main.id
  slug         = "files"
  display_name = "Files"
  icon         = "/icon/files.svg"
  url          = "http://localhost:${local.http_port}"
  share        = "owner"
  subdomain    = false
  healthcheck {
    url       = "http://localhost:${local.http_port}"
    interval  = 5
    threshold = 6
  }
}

# The workspace directory. Removed (with everything in it) when the workspace is deleted.
resource "terraform_data" "home" {
  input = {
    root = local.root
    dir  = local.dir
  }

  provisioner "local-exec" {
    command = "mkdir -p \"$DIR\""
    environment = {
      DIR = self.input.dir
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

# The agent process: exists while the workspace is started.
resource "terraform_data" "agent" {
  count      = data.coder_workspace.me.start_count
  depends_on = [terraform_data.home]

  # A new agent (new token) or a new init script restarts the process.
  triggers_replace = [coder_agent.main.id, coder_agent.main.init_script]

  input = {
    dir       = local.dir
    state_dir = local.state_dir
    pid_file  = "${local.state_dir}/agent.pid"
    log_file  = "${local.state_dir}/agent.log"
  }

  provisioner "local-exec" {
    # The agent is detached: its own session (setsid), immune to hangups (nohup), with
    # stdio away from terraform's pipes, so `apply` returns at once even when the access
    # URL is unreachable and the init script keeps retrying the download.
    command = <<-EOT
      set -eu
      mkdir -p "$STATE_DIR"
      if [ -s "$PID_FILE" ] && kill -0 "-$(cat "$PID_FILE")" 2>/dev/null; then
        echo "agent already running with pid $(cat "$PID_FILE")"
        exit 0
      fi
      printf '%s\n' "$INIT_SCRIPT" > "$STATE_DIR/init.sh"
      chmod 0700 "$STATE_DIR/init.sh"
      unset INIT_SCRIPT
      cd "$DIR"
      nohup setsid /bin/sh "$STATE_DIR/init.sh" >>"$LOG_FILE" 2>&1 </dev/null &
      echo "$!" > "$PID_FILE"
      echo "agent started with pid $!, logging to $LOG_FILE"
    EOT
    environment = {
      DIR               = self.input.dir
      STATE_DIR         = self.input.state_dir
      PID_FILE          = self.input.pid_file
      LOG_FILE          = self.input.log_file
      INIT_SCRIPT       = coder_agent.main.init_script
      CODER_AGENT_TOKEN = coder_agent.main.token
      HOME              = self.input.dir
      # The downloaded binary lives with the workspace, not in a fresh temp dir per start.
      CODER_AGENT_BINARY_DIR = self.input.state_dir
    }
  }

  provisioner "local-exec" {
    when = destroy
    # The pid is the session and process-group leader (setsid), so signalling the group
    # also stops whatever the init script or the agent started.
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

resource "coder_metadata" "home" {
  resource_id = terraform_data.home.id
  item {
    key   = "directory"
    value = local.dir
  }
  item {
    key   = "owner"
    value = data.coder_workspace_owner.me.name
  }
}
