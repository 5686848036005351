//! A small ext4 volume on a loop device, mounted by the test (root only),
//! to put a store on a disk that fails as real disks do: remounted
//! read-only by the kernel after an error, full, and mounted again by an
//! operator. Unmounted and detached on drop.
//!
//! Why ext4 and not tmpfs: `mount -o remount,ro` is refused (EBUSY) while
//! any file on the volume is open for writing, as the audit database is,
//! so a volume only turns read-only under a running callgate the way the
//! kernel does it after an error (`errors=remount-ro`), which tmpfs lacks.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command (root tools: losetup, mount, mkfs.ext4) and returns its
/// stdout; panics with its stderr when it fails.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (e2fsprogs, util-linux and root needed)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// An ext4 file system in an image file, mounted at [`Volume::path`].
pub struct Volume {
    _dir: tempfile::TempDir,
    image: PathBuf,
    mount: PathBuf,
    /// Every loop device attached to the image (a remount adds one).
    loops: Vec<String>,
}

impl Volume {
    /// Makes an image of `mib` MiB (no journal, no blocks reserved for
    /// root, so a filler file really fills it) and mounts it with
    /// `errors=remount-ro`.
    pub fn new(mib: u64) -> Volume {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("volume.img");
        let file = std::fs::File::create(&image).expect("image");
        file.set_len(mib << 20).expect("image size");
        drop(file);
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-m",
                "0",
                &image.display().to_string(),
            ],
        );
        let mut v = Volume {
            _dir: dir,
            image,
            mount,
            loops: Vec::new(),
        };
        v.attach_and_mount();
        v
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mount
    }

    fn attach_and_mount(&mut self) {
        let dev = run(
            "losetup",
            &["-f", "--show", &self.image.display().to_string()],
        );
        run(
            "mount",
            &[
                "-o",
                "errors=remount-ro",
                &dev,
                &self.mount.display().to_string(),
            ],
        );
        self.loops.push(dev);
    }

    /// The kernel's answer to a file system error: the volume is remounted
    /// read-only at once, under every open file, until it is unmounted.
    /// The volume is frozen first, so that everything written before is
    /// on the image (a real error may lose the last unwritten pages; that
    /// loss belongs to the kernel, not to what the test asserts).
    pub fn fail_read_only(&self) {
        let mount = self.mount.display().to_string();
        run("fsfreeze", &["-f", &mount]);
        let dev = self.loops.last().expect("mounted");
        let name = dev.trim_start_matches("/dev/");
        std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test\n")
            .expect("trigger_fs_error");
        run("fsfreeze", &["-u", &mount]);
    }

    /// What an operator does about it, first half: unmount (lazily: the
    /// store is still open). The mount point is an empty directory again.
    pub fn unmount(&self) {
        run("umount", &["-l", &self.mount.display().to_string()]);
    }

    /// Second half: mount the image again at the same place (a new loop
    /// device: the old one stays with the dead file system until the last
    /// file on it is closed).
    pub fn mount_again(&mut self) {
        self.attach_and_mount();
    }

    /// Fills the volume to the last block with `filler`; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0u8; 64 << 10];
        let mut small = vec![0u8; 1024];
        // Big writes until the disk refuses, then smaller ones for the
        // last partial chunk.
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&small).is_ok() {}
        small.truncate(1);
        while f.write_all(&small).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let mount = self.mount.display().to_string();
        let _ = Command::new("fsfreeze").args(["-u", &mount]).output();
        let _ = Command::new("umount").args(["-l", &mount]).output();
        for dev in &self.loops {
            // Detached now, or (still in use) when its last user closes it.
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
    }
}
