//! Persistence of CA material: the `CaStorage` trait, a data-dir file implementation and an in-memory one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::pem::{PemError, split_certs};

/// Everything the CA needs to restart with the same identity, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// The signing certificate (a self-signed root or an intermediate).
    pub cert_pem: String,
    /// The signing key, PKCS#8 PEM.
    pub key_pem: String,
    /// Certificates above the signing cert, up to (not including) the root; empty for a root.
    pub chain_pem: Vec<String>,
    /// Every root the mesh trusts; several during a root rotation.
    pub roots_pem: Vec<String>,
}

impl std::fmt::Debug for CaMaterial {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("chain_len", &self.chain_pem.len())
            .field("roots", &self.roots_pem.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("CA storage {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "CA storage is incomplete: {0} is missing (restore it or remove the CA directory to create a new CA)"
    )]
    Incomplete(PathBuf),
    #[error(transparent)]
    Pem(#[from] PemError),
}

/// Where the CA keeps its material. `load` returns `Ok(None)` when nothing was stored yet; an
/// unreadable or half-written store is an error, never silently a new CA.
pub trait CaStorage: Send + Sync {
    fn load(&self) -> Result<Option<CaMaterial>, StorageError>;
    fn save(&self, material: &CaMaterial) -> Result<(), StorageError>;
}

/// Files in a directory: `ca.crt`, `ca.key` (mode 0600), `ca-chain.pem`, `trust-bundle.pem`.
#[derive(Debug, Clone)]
pub struct FileCaStorage {
    dir: PathBuf,
}

/// Keeps material in memory (tests, and a CA that must not outlive its process).
#[derive(Debug, Default)]
pub struct MemoryCaStorage {
    material: Mutex<Option<CaMaterial>>,
}

// === impl FileCaStorage ===

const CERT_FILE: &str = "ca.crt";
const KEY_FILE: &str = "ca.key";
const CHAIN_FILE: &str = "ca-chain.pem";
const BUNDLE_FILE: &str = "trust-bundle.pem";
/// Owner read/write only: the CA key signs every identity in the mesh.
const KEY_MODE: u32 = 0o600;
/// Certificates are public.
const PUBLIC_MODE: u32 = 0o644;

impl FileCaStorage {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, name: &str) -> Result<Option<String>, StorageError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StorageError::Io { path, source }),
        }
    }
}

impl CaStorage for FileCaStorage {
    fn load(&self) -> Result<Option<CaMaterial>, StorageError> {
        let cert = self.read(CERT_FILE)?;
        let key = self.read(KEY_FILE)?;
        let (cert_pem, key_pem) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(c), Some(k)) => (c, k),
            (None, Some(_)) => return Err(StorageError::Incomplete(self.dir.join(CERT_FILE))),
            (Some(_), None) => return Err(StorageError::Incomplete(self.dir.join(KEY_FILE))),
        };
        let chain_pem = match self.read(CHAIN_FILE)? {
            Some(s) if !s.trim().is_empty() => split_certs(CHAIN_FILE, &s)?,
            _ => Vec::new(),
        };
        let roots_pem = match self.read(BUNDLE_FILE)? {
            Some(s) => split_certs(BUNDLE_FILE, &s)?,
            None => return Err(StorageError::Incomplete(self.dir.join(BUNDLE_FILE))),
        };
        Ok(Some(CaMaterial {
            cert_pem,
            key_pem,
            chain_pem,
            roots_pem,
        }))
    }

    /// Writes the key first and the trust bundle last, each atomically (tmp + fsync + rename),
    /// so a crash leaves either the old or the new file, never a torn one.
    fn save(&self, m: &CaMaterial) -> Result<(), StorageError> {
        fs::create_dir_all(&self.dir).map_err(|source| StorageError::Io {
            path: self.dir.clone(),
            source,
        })?;
        write_atomic(&self.dir.join(KEY_FILE), m.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(
            &self.dir.join(CERT_FILE),
            m.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        write_atomic(
            &self.dir.join(CHAIN_FILE),
            m.chain_pem.concat().as_bytes(),
            PUBLIC_MODE,
        )?;
        write_atomic(
            &self.dir.join(BUNDLE_FILE),
            m.roots_pem.concat().as_bytes(),
            PUBLIC_MODE,
        )
    }
}

/// Creates the temp file with `mode` from the start, so the key is never readable by others,
/// not even for an instant.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StorageError> {
    let io = |source| StorageError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}

// === impl MemoryCaStorage ===

impl CaStorage for MemoryCaStorage {
    fn load(&self) -> Result<Option<CaMaterial>, StorageError> {
        Ok(self.material.lock().clone())
    }

    fn save(&self, material: &CaMaterial) -> Result<(), StorageError> {
        *self.material.lock() = Some(material.clone());
        Ok(())
    }
}
