//! The snapshot file: the last applied resources, written atomically, read back at start-up.

use std::io;
use std::path::{Path, PathBuf};

use mesh_proto::types::v1::Resource;

use super::store::StoreFile;

/// File name inside the data directory.
pub const SNAPSHOT_FILE: &str = "config-snapshot.json";

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot write snapshot {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not valid JSON of resources: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Writes `file` to `dir/SNAPSHOT_FILE` via a temporary file and a rename, so a crash mid-write
/// leaves the previous snapshot intact, never a torn one.
pub async fn write(dir: &Path, file: &StoreFile) -> Result<(), PersistError> {
    let path = dir.join(SNAPSHOT_FILE);
    let werr = |source| PersistError::Write {
        path: path.clone(),
        source,
    };
    let body = serde_json::to_vec_pretty(file).map_err(|e| werr(io::Error::other(e)))?;
    tokio::fs::create_dir_all(dir).await.map_err(werr)?;
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    tokio::fs::write(&tmp, &body).await.map_err(werr)?;
    tokio::fs::rename(&tmp, &path).await.map_err(werr)?;
    Ok(())
}

/// Reads the snapshot in `dir`; `Ok(None)` when there is none yet.
pub async fn read(dir: &Path) -> Result<Option<StoreFile>, PersistError> {
    let path = dir.join(SNAPSHOT_FILE);
    let body = match tokio::fs::read(&path).await {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PersistError::Read { path, source }),
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|source| PersistError::Parse { path, source })
}

/// Reads a static config file: a JSON list of resources (or a snapshot file's object).
pub fn read_static(path: &Path) -> Result<Vec<Resource>, PersistError> {
    let body = std::fs::read(path).map_err(|source| PersistError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let perr = |source| PersistError::Parse {
        path: path.to_path_buf(),
        source,
    };
    match serde_json::from_slice::<Vec<Resource>>(&body) {
        Ok(list) => Ok(list),
        Err(list_err) => match serde_json::from_slice::<StoreFile>(&body) {
            Ok(file) if !file.resources.is_empty() => Ok(file.resources),
            _ => Err(perr(list_err)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn write_then_read_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).await.unwrap().is_none());
        let file = StoreFile {
            services: vec!["a".into()],
            resources: vec![Resource {
                name: "a".into(),
                version: "1".into(),
                kind: None,
            }],
        };
        write(dir.path(), &file).await.unwrap();
        let back = read(dir.path()).await.unwrap().unwrap();
        assert_eq!(back.services, ["a"]);
        assert_eq!(back.resources, file.resources);
        assert!(!dir.path().join(format!("{SNAPSHOT_FILE}.tmp")).exists());
    }

    #[test]
    fn static_config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("static.json");
        std::fs::write(&p, "{not json").unwrap();
        let e = read_static(&p).unwrap_err().to_string();
        assert!(e.contains("static.json"), "{e}");
        std::fs::write(
            &p,
            r#"[{"name":"a","version":"1","route":{"service":"a"}}]"#,
        )
        .unwrap();
        assert_eq!(read_static(&p).unwrap().len(), 1);
    }
}
