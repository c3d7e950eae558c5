//! Spilling: the run files the index appends to when it is full, read back one partition at a
//! time.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use super::{DedupIndex, Keys, SpillConfig, SPILL_PARTITIONS};
use crate::{Error, Result};

/// The run file of partition `p` in spill directory `dir` (nothing when the index never
/// spilled), deleted once read so its disk space is freed partition by partition.
pub(super) fn read_run(dir: Option<&Path>, p: usize) -> Result<Vec<u8>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let path = dir.join(format!("part-{p:03}.run"));
    let data =
        std::fs::read(&path).map_err(|e| Error::Spill(format!("{}: {e}", path.display())))?;
    let _ = std::fs::remove_file(&path);
    Ok(data)
}

pub(super) struct Spill {
    pub(super) dir: tempfile::TempDir,
    pub(super) files: Vec<BufWriter<File>>,
    pub(super) spilled_entries: u64,
}

impl Spill {
    fn new(config: &SpillConfig) -> Result<Self> {
        let err = |e: std::io::Error| {
            Error::Spill(format!(
                "cannot create spill files in {}: {e}",
                config.dir.display()
            ))
        };
        let dir = tempfile::Builder::new()
            .prefix("edp-spill-")
            .tempdir_in(&config.dir)
            .map_err(err)?;
        let files = (0..SPILL_PARTITIONS)
            .map(|p| {
                File::create(dir.path().join(format!("part-{p:03}.run")))
                    .map(|f| BufWriter::with_capacity(32 << 10, f))
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(err)?;
        Ok(Spill {
            dir,
            files,
            spilled_entries: 0,
        })
    }

    fn io_error(&self, e: std::io::Error) -> Error {
        Error::Spill(format!("{}: {e}", self.dir.path().display()))
    }
}

impl DedupIndex {
    /// Appends every in-memory entry to the partition run files and empties memory.
    pub(super) fn spill_all(&mut self) -> Result<()> {
        let Some(config) = &self.config else {
            return Ok(());
        };
        if self.spill.is_none() {
            self.spill = Some(Spill::new(config)?);
        }
        let spill = self
            .spill
            .as_mut()
            .ok_or_else(|| Error::Internal("spill not set".into()))?;
        let result: std::io::Result<u64> = match &mut self.keys {
            Keys::Int3(runs) => runs.spill(spill),
            Keys::Int5(runs) => runs.spill(spill),
            Keys::Fp4(runs) => runs.spill(spill),
            Keys::Fp6(runs) => runs.spill(spill),
        };
        match result {
            Ok(n) => {
                spill.spilled_entries += n;
                Ok(())
            }
            Err(e) => Err(spill.io_error(e)),
        }
    }
}
