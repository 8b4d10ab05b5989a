//! Hot reload (SPEC §15, `run --watch` or `hot_reload: true`): the crews folder's files
//! are looked at (their size and modification time) ten times a second; a change that
//! has settled (two looks alike, so an editor's burst of writes counts once) and changes
//! what a crew folder holds is validated as `run` validates, and a valid folder goes to the
//! scheduler, which takes it at its next slice boundary: new crews start, changed ones
//! get their new version (their runner answers the call it has first), crews whose
//! scheduling changed are planned anew, and removed ones stop after their last call,
//! with every stream's context untouched. An invalid folder is reported with file and
//! field, and the running versions stay.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use crate::config::{Crews, GlobalConfig, crew_files, crew_version};
use crate::ops::metrics::Metrics;
use crate::scheduler::NewCrews;

/// How often the folder is looked at: a saved change is seen within two looks.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// Each crew folder's digest, by folder.
type Digests = BTreeMap<PathBuf, String>;

/// What a look sees without reading a file: every file's path, size and modification
/// time.
type Stamps = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The crews folder as the host runs it, and as it last looked.
pub struct CrewsWatch {
    dir: PathBuf,
    global: GlobalConfig,
    /// What the folder held when the running versions were taken.
    applied: Digests,
    /// The stamps the last digests were taken at.
    digested: Stamps,
    /// The last look, for the debounce.
    last: Stamps,
}

impl CrewsWatch {
    pub fn new(dir: &Path, global: &GlobalConfig) -> CrewsWatch {
        let now = stamps(dir);
        CrewsWatch {
            dir: dir.to_path_buf(),
            global: global.clone(),
            applied: digests(dir),
            digested: now.clone(),
            last: now,
        }
    }

    /// Watches until dropped or until the scheduler is gone, sending each valid new
    /// version of the folder to `scheduler`.
    pub async fn run(mut self, scheduler: mpsc::UnboundedSender<NewCrews>, metrics: &Metrics) {
        loop {
            tokio::time::sleep(LOOK_EVERY).await;
            if let Some(new) = self.look(metrics)
                && scheduler.send(new).is_err()
            {
                return;
            }
        }
    }

    fn look(&mut self, metrics: &Metrics) -> Option<NewCrews> {
        let stamps = stamps(&self.dir);
        let settled = stamps == self.last;
        self.last = stamps.clone();
        if !settled || stamps == self.digested {
            return None;
        }
        self.digested = stamps;
        let now = digests(&self.dir);
        if now == self.applied {
            // Touched, or saved unchanged.
            return None;
        }
        match Crews::load(&self.dir, &self.global) {
            Ok(crews) => {
                // Against the versions running: a crew edited while another's folder
                // was invalid is still new here.
                let changed = (crews.as_slice().iter())
                    .filter(|spec| {
                        let folder = absolute(&spec.dir);
                        now.get(&folder) != self.applied.get(&folder)
                    })
                    .map(|spec| spec.name.clone())
                    .collect::<BTreeSet<String>>();
                self.applied = now;
                Some(NewCrews { crews, changed })
            }
            Err(errors) => {
                for issue in &errors.0 {
                    tracing::error!("hot reload: {issue}; the running versions stay");
                }
                metrics.crew_reloaded("", "invalid");
                None
            }
        }
    }
}

fn absolute(folder: &Path) -> PathBuf {
    std::path::absolute(folder).unwrap_or_else(|_| folder.to_path_buf())
}

/// Every crew folder under `dir`, sorted.
fn crew_folders(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<PathBuf> = (entries.filter_map(Result::ok).map(|entry| entry.path()))
        .filter(|folder| folder.is_dir())
        .collect();
    folders.sort();
    folders
}

/// Every crew folder under `dir` and its version.
fn digests(dir: &Path) -> Digests {
    (crew_folders(dir).into_iter())
        .map(|folder| (absolute(&folder), crew_version(&folder)))
        .collect()
}

/// The files of every crew folder under `dir`, as a look sees them.
fn stamps(dir: &Path) -> Stamps {
    let files = crew_folders(dir).into_iter().flat_map(|folder| {
        // An empty folder counts too: a crew folder made before its files.
        std::iter::once(folder.clone()).chain(crew_files(&folder))
    });
    files
        .map(|file| {
            let meta = std::fs::metadata(&file).ok();
            let size = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|meta| meta.modified().ok());
            (file, size, modified)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::crews_dir::tests::write_crew;

    /// Two looks, so that the change counts as settled.
    fn settled_look(watch: &mut CrewsWatch, metrics: &Metrics) -> Option<NewCrews> {
        assert!(
            watch.look(metrics).is_none(),
            "a first look only notes the change"
        );
        watch.look(metrics)
    }

    #[test]
    fn a_crew_edited_while_another_is_invalid_is_reloaded_once_the_folder_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let (global, metrics) = (GlobalConfig::default(), Metrics::new(4096, None));
        write_crew(dir.path(), "a", "triggers: ['*']\n");
        let b = write_crew(dir.path(), "b", "triggers: ['*']\n");
        let mut watch = CrewsWatch::new(dir.path(), &global);
        std::fs::write(dir.path().join("a/handler.py"), "version = 2\n").unwrap();
        std::fs::write(&b, "crew: b\ntrigers: ['*']\n").unwrap();
        assert!(settled_look(&mut watch, &metrics).is_none(), "b is invalid");
        write_crew(dir.path(), "b", "triggers: ['*']\n");
        let new = settled_look(&mut watch, &metrics).expect("a valid folder again");
        assert!(new.changed.contains("a"), "{:?}", new.changed);
        assert!(
            settled_look(&mut watch, &metrics).is_none(),
            "nothing new after"
        );
    }
}
