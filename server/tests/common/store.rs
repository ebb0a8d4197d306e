//! Support for the tests of `--data-dir`: a data directory per test, and
//! what the restart tests do to a node and read from its ids.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::Server;

/// A fresh data directory (not created: the node does that), removed when
/// dropped, whether the test made it a directory or a file.
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new(name: &str) -> DataDir {
        let dir = std::env::temp_dir().join(format!("ringcast-data-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The epoch part of a message id.
pub fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap()
}

/// Kills the node with SIGKILL (no drain, no clean store shutdown) and
/// waits for it to be gone.
pub fn kill_9(node: &mut Server) {
    Command::new("kill")
        .args(["-KILL", &node.pid().to_string()])
        .status()
        .unwrap();
    assert!(node.wait_exit(Duration::from_secs(5)).is_some(), "died");
}
