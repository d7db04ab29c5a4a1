//! The `sftp` subsystem (SFTP version 3, what OpenSSH speaks): the real
//! filesystem, absolute paths as given and relative paths from the session's
//! directory, with the agent user's permissions.
//!
//! `russh-sftp` supplies the packet types and codec. Its own server loop is
//! not used: it spawns a task we could not own and keeps looping after some
//! errors; this loop is owned by the channel's task and ends on the first
//! framing error. Requests are answered in order, which is what OpenSSH's
//! pipelining client expects (replies are matched by id anyway). File I/O is
//! positional (`pread`/`pwrite`) on blocking threads.

use std::collections::HashMap;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use russh_sftp::protocol::{
    Attrs, Data, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request we accept (OpenSSH sends 32 KiB writes plus framing).
const MAX_PACKET: u32 = 256 * 1024;
/// Largest read we answer; clients ask again for the rest.
const MAX_READ: u32 = 64 * 1024;
/// Directory entries per `SSH_FXP_NAME` reply.
const DIR_BATCH: usize = 128;
/// Open handles one session may hold.
const MAX_HANDLES: usize = 1024;

/// Why an SFTP session ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SftpError {
    #[error("sftp i/o: {0}")]
    Io(#[from] io::Error),
    #[error("sftp packet of {0} bytes is too large")]
    TooLarge(u32),
    #[error("cannot encode sftp reply: {0}")]
    Encode(String),
}

/// Serves SFTP on `stream` until the client closes it.
pub(crate) async fn serve<S>(mut stream: S, cwd: PathBuf) -> Result<(), SftpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut server = SftpServer { cwd, handles: HashMap::new(), next_handle: 0 };
    loop {
        let len = match stream.read_u32().await {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if len > MAX_PACKET {
            return Err(SftpError::TooLarge(len));
        }
        let mut body = vec![0u8; len as usize];
        stream.read_exact(&mut body).await?;
        let mut body = Bytes::from(body);
        let reply = match Packet::try_from(&mut body) {
            Ok(request) => server.handle(request).await,
            Err(e) => status(0, StatusCode::BadMessage, &e.to_string()),
        };
        let out = Bytes::try_from(reply).map_err(|e| SftpError::Encode(e.to_string()))?;
        stream.write_all(&out).await?;
        stream.flush().await?;
    }
}

enum OpenHandle {
    File(Arc<File>),
    Dir(std::vec::IntoIter<russh_sftp::protocol::File>),
}

struct SftpServer {
    cwd: PathBuf,
    handles: HashMap<String, OpenHandle>,
    next_handle: u64,
}

type Reply = Result<Packet, (StatusCode, String)>;

fn status(id: u32, code: StatusCode, message: &str) -> Packet {
    Packet::Status(Status {
        id,
        status_code: code,
        error_message: message.to_string(),
        language_tag: "en-US".to_string(),
    })
}

fn ok(id: u32) -> Reply {
    Ok(status(id, StatusCode::Ok, "Ok"))
}

fn io_status(e: io::Error) -> (StatusCode, String) {
    let code = match e.kind() {
        io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    (code, e.to_string())
}

/// Runs blocking filesystem work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T, (StatusCode, String)> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(io_status),
        Err(e) => Err((StatusCode::Failure, e.to_string())),
    }
}

impl SftpServer {
    async fn handle(&mut self, request: Packet) -> Packet {
        let id = request.get_request_id();
        match self.dispatch(request).await {
            Ok(reply) => reply,
            Err((code, message)) => status(id, code, &message),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = if p.is_empty() { "." } else { p };
        self.cwd.join(p)
    }

    fn add_handle(&mut self, h: OpenHandle) -> Result<String, (StatusCode, String)> {
        if self.handles.len() >= MAX_HANDLES {
            return Err((StatusCode::Failure, "too many open handles".into()));
        }
        self.next_handle += 1;
        let name = self.next_handle.to_string();
        self.handles.insert(name.clone(), h);
        Ok(name)
    }

    fn file(&self, handle: &str) -> Result<Arc<File>, (StatusCode, String)> {
        match self.handles.get(handle) {
            Some(OpenHandle::File(f)) => Ok(f.clone()),
            _ => Err((StatusCode::Failure, "invalid handle".into())),
        }
    }

    async fn dispatch(&mut self, request: Packet) -> Reply {
        match request {
            Packet::Init(_) => Ok(Packet::Version(Version {
                version: russh_sftp::protocol::VERSION,
                extensions: HashMap::new(),
            })),
            Packet::Open(open) => {
                let path = self.path(&open.filename);
                let flags = open.pflags;
                let mode = open.attrs.permissions.unwrap_or(0o666) & 0o7777;
                let file = blocking(move || {
                    let mut o = OpenOptions::new();
                    o.read(flags.contains(OpenFlags::READ))
                        .write(flags.contains(OpenFlags::WRITE))
                        .append(flags.contains(OpenFlags::APPEND))
                        .mode(mode);
                    if flags.contains(OpenFlags::CREATE) {
                        if flags.contains(OpenFlags::EXCLUDE) {
                            o.create_new(true);
                        } else {
                            o.create(true);
                        }
                    }
                    o.truncate(flags.contains(OpenFlags::TRUNCATE));
                    o.open(path)
                })
                .await?;
                let handle = self.add_handle(OpenHandle::File(Arc::new(file)))?;
                Ok(Packet::Handle(Handle { id: open.id, handle }))
            }
            Packet::Close(close) => match self.handles.remove(&close.handle) {
                Some(_) => ok(close.id),
                None => Err((StatusCode::Failure, "invalid handle".into())),
            },
            Packet::Read(read) => {
                let file = self.file(&read.handle)?;
                let len = read.len.min(MAX_READ) as usize;
                let offset = read.offset;
                let data = blocking(move || {
                    let mut buf = vec![0u8; len];
                    let n = file.read_at(&mut buf, offset)?;
                    buf.truncate(n);
                    Ok(buf)
                })
                .await?;
                if data.is_empty() {
                    return Err((StatusCode::Eof, "end of file".into()));
                }
                Ok(Packet::Data(Data { id: read.id, data }))
            }
            Packet::Write(write) => {
                let file = self.file(&write.handle)?;
                let (offset, data) = (write.offset, write.data);
                blocking(move || file.write_all_at(&data, offset)).await?;
                ok(write.id)
            }
            Packet::Lstat(s) => self.stat(s.id, &s.path, false).await,
            Packet::Stat(s) => self.stat(s.id, &s.path, true).await,
            Packet::Fstat(s) => {
                let file = self.file(&s.handle)?;
                let meta = blocking(move || file.metadata()).await?;
                Ok(Packet::Attrs(Attrs { id: s.id, attrs: attrs_of(&meta) }))
            }
            Packet::SetStat(s) => {
                let path = self.path(&s.path);
                blocking(move || set_attrs(&path, None, &s.attrs)).await?;
                ok(s.id)
            }
            Packet::FSetStat(s) => {
                let file = self.file(&s.handle)?;
                blocking(move || set_attrs(Path::new(""), Some(&file), &s.attrs)).await?;
                ok(s.id)
            }
            Packet::OpenDir(o) => {
                let path = self.path(&o.path);
                let entries = blocking(move || list_dir(&path)).await?;
                let handle = self.add_handle(OpenHandle::Dir(entries.into_iter()))?;
                Ok(Packet::Handle(Handle { id: o.id, handle }))
            }
            Packet::ReadDir(r) => match self.handles.get_mut(&r.handle) {
                Some(OpenHandle::Dir(entries)) => {
                    let files: Vec<_> = entries.by_ref().take(DIR_BATCH).collect();
                    if files.is_empty() {
                        return Err((StatusCode::Eof, "no more entries".into()));
                    }
                    Ok(Packet::Name(Name { id: r.id, files }))
                }
                _ => Err((StatusCode::Failure, "invalid handle".into())),
            },
            Packet::Remove(r) => {
                let path = self.path(&r.filename);
                blocking(move || fs::remove_file(path)).await?;
                ok(r.id)
            }
            Packet::MkDir(m) => {
                let path = self.path(&m.path);
                let mode = m.attrs.permissions.unwrap_or(0o777) & 0o7777;
                blocking(move || {
                    use std::os::unix::fs::DirBuilderExt;
                    fs::DirBuilder::new().mode(mode).create(path)
                })
                .await?;
                ok(m.id)
            }
            Packet::RmDir(r) => {
                let path = self.path(&r.path);
                blocking(move || fs::remove_dir(path)).await?;
                ok(r.id)
            }
            Packet::RealPath(r) => {
                let path = self.path(&r.path);
                let resolved = blocking(move || {
                    Ok(fs::canonicalize(&path).unwrap_or_else(|_| normalize(&path)))
                })
                .await?;
                let name = resolved.to_string_lossy().into_owned();
                Ok(Packet::Name(Name {
                    id: r.id,
                    files: vec![russh_sftp::protocol::File::dummy(name)],
                }))
            }
            Packet::Rename(r) => {
                let (from, to) = (self.path(&r.oldpath), self.path(&r.newpath));
                blocking(move || {
                    // SFTP v3 rename must not replace an existing file.
                    if fs::symlink_metadata(&to).is_ok() {
                        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "target exists"));
                    }
                    fs::rename(from, to)
                })
                .await?;
                ok(r.id)
            }
            Packet::ReadLink(r) => {
                let path = self.path(&r.path);
                let target = blocking(move || fs::read_link(path)).await?;
                Ok(Packet::Name(Name {
                    id: r.id,
                    files: vec![russh_sftp::protocol::File::dummy(
                        target.to_string_lossy().into_owned(),
                    )],
                }))
            }
            Packet::Symlink(s) => {
                // OpenSSH sends (target, link) in this order, reversed from the
                // draft's field names; follow OpenSSH, as every client does.
                let target = PathBuf::from(&s.linkpath);
                let link = self.path(&s.targetpath);
                blocking(move || std::os::unix::fs::symlink(target, link)).await?;
                ok(s.id)
            }
            Packet::Extended(_) => Err((StatusCode::OpUnsupported, "unsupported extension".into())),
            _ => Err((StatusCode::BadMessage, "unexpected packet".into())),
        }
    }

    async fn stat(&self, id: u32, path: &str, follow: bool) -> Reply {
        let path = self.path(path);
        let meta =
            blocking(move || if follow { fs::metadata(path) } else { fs::symlink_metadata(path) })
                .await?;
        Ok(Packet::Attrs(Attrs { id, attrs: attrs_of(&meta) }))
    }
}

/// Attributes with the full `st_mode` (type bits included), which is how
/// OpenSSH tells files, directories and links apart.
fn attrs_of(meta: &Metadata) -> FileAttributes {
    let secs = |t: io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    };
    FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(meta.mode()),
        atime: Some(secs(meta.accessed())),
        mtime: Some(secs(meta.modified())),
    }
}

fn set_attrs(path: &Path, file: Option<&File>, attrs: &FileAttributes) -> io::Result<()> {
    let opened;
    let file = match file {
        Some(f) => f,
        None => {
            opened = File::open(path)?;
            &opened
        }
    };
    if let Some(size) = attrs.size {
        file.set_len(size)?;
    }
    if let Some(mode) = attrs.permissions {
        file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if let (Some(uid), Some(gid)) = (attrs.uid, attrs.gid) {
        let meta = file.metadata()?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::fchown(file, Some(uid), Some(gid))?;
        }
    }
    if attrs.atime.is_some() || attrs.mtime.is_some() {
        let at = |s: u32| UNIX_EPOCH + Duration::from_secs(u64::from(s));
        let mut times = fs::FileTimes::new();
        if let Some(a) = attrs.atime {
            times = times.set_accessed(at(a));
        }
        if let Some(m) = attrs.mtime {
            times = times.set_modified(at(m));
        }
        file.set_times(times)?;
    }
    Ok(())
}

fn list_dir(path: &Path) -> io::Result<Vec<russh_sftp::protocol::File>> {
    let mut files = Vec::new();
    for name in [".", ".."] {
        if let Ok(meta) = fs::symlink_metadata(path.join(name)) {
            files.push(entry(name.to_string(), &meta));
        }
    }
    for dirent in fs::read_dir(path)? {
        let dirent = dirent?;
        let name = dirent.file_name().to_string_lossy().into_owned();
        if let Ok(meta) = dirent.metadata() {
            files.push(entry(name, &meta));
        }
    }
    Ok(files)
}

fn entry(filename: String, meta: &Metadata) -> russh_sftp::protocol::File {
    russh_sftp::protocol::File {
        longname: long_name(&filename, meta),
        filename,
        attrs: attrs_of(meta),
    }
}

/// An `ls -l` line, which `sftp`'s `ls -l` prints as is.
fn long_name(name: &str, meta: &Metadata) -> String {
    let mode = meta.mode();
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o020000 => 'c',
        0o060000 => 'b',
        0o010000 => 'p',
        0o140000 => 's',
        _ => '-',
    };
    let mut perms = String::with_capacity(10);
    perms.push(kind);
    for shift in [6u32, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    format!(
        "{perms} {:>3} {:<8} {:<8} {:>8} {:>10} {name}",
        meta.nlink(),
        meta.uid(),
        meta.gid(),
        meta.len(),
        meta.mtime(),
    )
}

/// Lexical normalisation for paths that do not exist (yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_lexically() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert_eq!(normalize(Path::new("/../..")), PathBuf::from("/"));
    }

    #[test]
    fn long_names_look_like_ls() {
        let dir = tempfile::tempdir().unwrap();
        let meta = fs::metadata(dir.path()).unwrap();
        let line = long_name("x", &meta);
        assert!(line.starts_with("drwx"), "{line}");
        assert!(line.ends_with(" x"), "{line}");
    }

    #[tokio::test]
    async fn answers_init_and_ends_on_eof() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, "/".into()));
        // SSH_FXP_INIT, version 3.
        client.write_all(&[0, 0, 0, 5, 1, 0, 0, 0, 3]).await.unwrap();
        let len = client.read_u32().await.unwrap();
        let mut body = vec![0u8; len as usize];
        client.read_exact(&mut body).await.unwrap();
        assert_eq!(body.first(), Some(&2)); // SSH_FXP_VERSION
        drop(client);
        task.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn refuses_oversized_packets() {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(serve(server, "/".into()));
        client.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(task.await.unwrap(), Err(SftpError::TooLarge(_))));
    }
}
