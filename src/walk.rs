//! Walking a directory tree (templates/, and the reload watcher's fingerprint): symlinks are
//! followed, but each real directory is entered once, so a symlink loop (`ln -s .. dir/x`) is
//! reported instead of walked forever.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Every file (not directory) under the root, as paths under the root.
    pub files: Vec<PathBuf>,
    /// Directories (symlinks) leading back to a directory already on the walk.
    pub loops: Vec<PathBuf>,
}

/// Walks `root`; a missing root is an empty walk.
pub fn walk(root: &Path) -> Walk {
    let mut out = Walk::default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    if let Ok(real) = root.canonicalize() {
        seen.insert(real);
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                match path.canonicalize() {
                    Ok(real) if seen.insert(real.clone()) => stack.push(path),
                    Ok(_) => out.loops.push(path),
                    Err(_) => {}
                }
            } else {
                out.files.push(path);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_loop_is_reported_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("templates");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.j2"), "a").unwrap();
        std::fs::write(root.join("sub/b.j2"), "b").unwrap();
        std::os::unix::fs::symlink("..", root.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(".", root.join("self")).unwrap();
        let w = walk(&root);
        assert_eq!(w.files.len(), 2, "{:?}", w.files);
        assert_eq!(w.loops.len(), 2, "{:?}", w.loops);
    }
}
