//! Object storage locations: turns the URLs users type into an `ObjectStore` and a path.
//!
//! Accepted forms: a plain local path, `file:///abs/path`, `s3://bucket/prefix` (configured from
//! the standard AWS environment: region, credential chain, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP`
//! for S3-compatible servers) and `memory://` (one in-process store shared by every `memory://`
//! location, for tests). Local paths go through `LocalFileSystem`, whose uploads are written to
//! a staging file and renamed into place, so a local output becomes visible only when complete,
//! exactly as on S3.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::{Error, Result};

/// The KMS key S3 writes are encrypted with (SSE-KMS), when configured.
static SSE_KMS_KEY: OnceLock<String> = OnceLock::new();

/// The process's one in-memory store: every `memory://` location shares it, so what one part of
/// a job writes there the next can read.
static MEMORY: OnceLock<Arc<InMemory>> = OnceLock::new();

/// Makes every S3 write of this process use SSE-KMS with `key_id` (the `kms_key_id` setting).
/// Set once, at start-up, before any location is parsed.
pub fn use_sse_kms(key_id: String) {
    let _ = SSE_KMS_KEY.set(key_id);
}

/// A location in an object store: an object or a prefix.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    /// The URL as given, for messages and reports.
    pub url: String,
    scheme: Scheme,
    bucket: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scheme {
    File,
    S3,
    Memory,
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// The retry policy promised for transient storage errors: 3 retries, exponential backoff
/// with jitter from 100 ms.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(120),
    }
}

impl Location {
    /// Parses `url` (see the module docs for the forms).
    pub fn parse(url: &str) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(Error::Config(format!(
                    "`{url}`: an s3:// URL needs a bucket"
                )));
            }
            // `with_client_options` replaces what `from_env` read, so carry AWS_ALLOW_HTTP over.
            let allow_http =
                std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
            let mut builder = AmazonS3Builder::from_env();
            if let Some(key) = SSE_KMS_KEY.get() {
                builder = builder.with_sse_kms_encryption(key);
            }
            let store = builder
                .with_bucket_name(bucket)
                .with_retry(retry_config())
                .with_client_options(
                    ClientOptions::new()
                        .with_timeout(Duration::from_secs(300))
                        .with_allow_http(allow_http),
                )
                .build()
                .map_err(|e| Error::Config(format!("`{url}`: {e}")))?;
            // Keys are taken as they are (Path::parse), not percent-encoded (Path::from): an
            // object DMS wrote as `é.parquet` must be read as `é.parquet`.
            let path = Path::parse(key.trim_end_matches('/'))
                .map_err(|e| Error::Config(format!("`{url}`: not a usable S3 key: {e}")))?;
            return Ok(Location {
                store: Arc::new(store),
                path,
                url: url.to_string(),
                scheme: Scheme::S3,
                bucket: bucket.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("memory://") {
            return Ok(Location {
                store: MEMORY.get_or_init(|| Arc::new(InMemory::new())).clone(),
                path: Path::from(rest),
                url: url.to_string(),
                scheme: Scheme::Memory,
                bucket: String::new(),
            });
        }
        let local = match url.strip_prefix("file://") {
            Some(rest) => rest,
            None if url.contains("://") => {
                return Err(Error::Config(format!(
                    "`{url}`: unsupported URL scheme; use s3://, file://, memory:// or a local path"
                )))
            }
            None => url,
        };
        let abs = std::path::absolute(local)
            .map_err(|e| Error::Config(format!("`{url}`: not a usable path: {e}")))?;
        let path = Path::from_absolute_path(&abs)
            .map_err(|e| Error::Config(format!("`{url}`: not a usable path: {e}")))?;
        Ok(Location {
            store: Arc::new(LocalFileSystem::new()),
            path,
            url: url.to_string(),
            scheme: Scheme::File,
            bucket: String::new(),
        })
    }

    /// The location `name` below this one (`name` may contain `/`).
    pub fn child(&self, name: &str) -> Location {
        let mut path = self.path.clone();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            path = match self.scheme {
                // Object keys verbatim; local paths keep object_store's encoding, which
                // LocalFileSystem decodes back into file names.
                Scheme::S3 | Scheme::Memory => {
                    let joined = if path.as_ref().is_empty() {
                        part.to_string()
                    } else {
                        format!("{path}/{part}")
                    };
                    Path::parse(&joined).unwrap_or_else(|_| path.clone().join(part))
                }
                Scheme::File => path.clone().join(part),
            };
        }
        Location {
            store: self.store.clone(),
            url: self.url_of(&path),
            path,
            scheme: self.scheme,
            bucket: self.bucket.clone(),
        }
    }

    /// A location in the same store at `path`.
    pub fn at(&self, path: Path) -> Location {
        Location {
            store: self.store.clone(),
            url: self.url_of(&path),
            path,
            scheme: self.scheme,
            bucket: self.bucket.clone(),
        }
    }

    fn url_of(&self, path: &Path) -> String {
        match self.scheme {
            Scheme::S3 => format!("s3://{}/{}", self.bucket, path),
            Scheme::Memory => format!("memory://{path}"),
            Scheme::File => format!("/{path}"),
        }
    }
}

/// Maps a storage error on `object` to the library error.
pub fn store_error(object: &str, source: object_store::Error) -> Error {
    Error::Store {
        object: object.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[test]
    fn memory_locations_share_one_store() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let written = Location::parse("memory://edp-test/a/part-00000.parquet").unwrap();
        rt.block_on(written.store.put(&written.path, b"rows".to_vec().into()))
            .unwrap();
        let read = Location::parse("memory://edp-test/a/part-00000.parquet").unwrap();
        let bytes = rt
            .block_on(async { read.store.get(&read.path).await?.bytes().await })
            .unwrap();
        assert_eq!(&bytes[..], b"rows");
    }
}
