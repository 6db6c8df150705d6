//! Path decoding and resolution, on any request path: never panics, and nothing outside the
//! root is ever resolved (a sentinel file beside the root, and a symlink to it inside, must
//! never be servable).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use socketserver::__bench::resolve;

struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let top = dir.path().canonicalize().expect("canonical temp dir");
        let root = top.join("root");
        std::fs::create_dir_all(root.join("sub")).expect("the tree");
        std::fs::write(root.join("sub/ok.txt"), b"ok").expect("the tree");
        std::fs::write(top.join("secret.txt"), b"secret").expect("the tree");
        std::os::unix::fs::symlink(top.join("secret.txt"), root.join("link.txt"))
            .expect("the tree");
        Tree { _dir: dir, root }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let t = tree();
    if let Some(resolved) = socketserver::__bench::resolved_path(&t.root, path) {
        assert!(
            resolved.starts_with(&t.root),
            "{path:?} resolved outside the root: {}",
            resolved.display()
        );
    }
    let _ = resolve(&t.root, path);
});
