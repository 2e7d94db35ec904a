//! The executable's start-up code out of the resident set once start-up is over.
//!
//! Why: an idle `serve` with one rule was ~22 MB resident, ~20 MB of it the executable's own
//! read-only pages. The kernel maps a file's page cache a whole folio at a time (measured: runs
//! of up to ~3 MB of the 18 MB text segment per region touched), so loading the rulebooks,
//! opening the store and binding the listeners leave most of the segment mapped, though an
//! idle service runs a small part of it. Once start-up is over, `MADV_DONTNEED` on those
//! mappings drops them from this process's page tables: the pages stay in the page cache
//! (shared with every process running the binary, reclaimable), and what runs later is mapped
//! again when first touched (a minor fault; no disk read while the page cache holds it).
//!
//! Only mappings of the executable that are not writable and hold no private copy of a page
//! are released: relocated data (RELRO) and any page a debugger patched are private copies,
//! which `MADV_DONTNEED` would discard, so they are left alone.

use std::os::unix::fs::MetadataExt;

/// A mapping of the executable that may be released: start address and length.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
}

/// Releases the executable's clean read-only mappings and returns the memory this thread's
/// allocator heap holds free (mimalloc, the binary's allocator, otherwise keeps what start-up
/// freed for a second or more: measured, 7 MB of the parsed rules of 10,000 rules for ~10 s
/// after `listening`). Returns the bytes of code released. Errors (no `/proc`, a refused
/// `madvise`) leave everything mapped: it is an optimization only.
pub fn release_startup_pages() -> usize {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time; it
    // only frees memory mimalloc holds unused (nothing when another allocator is in use).
    unsafe { libmimalloc_sys::mi_collect(true) };
    let Ok(exe) = std::fs::metadata("/proc/self/exe") else {
        return 0;
    };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for m in clean_read_only(&smaps, exe.dev(), exe.ino()) {
        let Some(addr) = std::ptr::NonNull::new(m.start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is exactly one mapping of the executable file, read-only and with
        // no private (copied-on-write) page: after MADV_DONTNEED its contents are read again
        // from the file on the next access, identical to what is mapped now. Nothing in this
        // process holds a reference into it that could observe the difference.
        let done = unsafe {
            nix::sys::mman::madvise(addr, m.len, nix::sys::mman::MmapAdvise::MADV_DONTNEED)
        };
        if done.is_ok() {
            released += m.len;
        }
    }
    released
}

/// The mappings in `smaps` of the file `dev`/`ino` that are not writable and have no
/// anonymous (private, copied-on-write) page.
fn clean_read_only(smaps: &str, dev: u64, ino: u64) -> Vec<Mapping> {
    let want_dev = format!("{:02x}:{:02x}", major(dev), minor(dev));
    let mut found = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: `start-end perms offset dev inode [path]`.
        if let [range, perms, _offset, d, inode, ..] = fields[..]
            && let Some((start, end)) = range.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            current = (d == want_dev
                && inode.parse() == Ok(ino)
                && perms.starts_with('r')
                && !perms.contains('w')
                && end > start)
                .then_some(Mapping {
                    start,
                    len: end - start,
                });
            continue;
        }
        // `Anonymous:` follows the header: a private copy of any page rules the mapping out.
        if let ["Anonymous:", kb, ..] = fields[..]
            && let Some(m) = current.take()
            && kb == "0"
        {
            found.push(m);
        }
    }
    found
}

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55fe89e2a000-55fe8a418000 r--p 00000000 fd:01 4242 /usr/bin/rulehook
Size:               6072 kB
Rss:                2712 kB
Anonymous:             0 kB
55fe8a418000-55fe8b63f000 r-xp 005ed000 fd:01 4242 /usr/bin/rulehook
Rss:               15164 kB
Anonymous:             0 kB
55fe8b63f000-55fe8b6f6000 r--p 01813000 fd:01 4242 /usr/bin/rulehook
Rss:                 732 kB
Anonymous:           732 kB
55fe8b6f6000-55fe8b702000 rw-p 018c9000 fd:01 4242 /usr/bin/rulehook
Anonymous:            48 kB
7fc2208b6000-7fc220a0c000 r-xp 00028000 fd:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7fc220b00000-7fc220b01000 r--p 00000000 fd:02 4242 /other/device/same/inode
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_released() {
        let dev = (0xfd << 8) | 0x01;
        let found = clean_read_only(SMAPS, dev, 4242);
        assert_eq!(
            found,
            [
                Mapping {
                    start: 0x55fe89e2a000,
                    len: 0x55fe8a418000 - 0x55fe89e2a000
                },
                Mapping {
                    start: 0x55fe8a418000,
                    len: 0x55fe8b63f000 - 0x55fe8a418000
                },
            ],
            "the relocated (RELRO) and writable mappings, other files and other devices stay"
        );
        assert!(clean_read_only(SMAPS, dev, 1).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_running_and_lowers_its_file_backed_pages() {
        let rss_file = || -> u64 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            line.split_whitespace().nth(1).unwrap().parse().unwrap()
        };
        let before = rss_file();
        let released = release_startup_pages();
        assert!(released > 0, "nothing released");
        // Code runs on, mapped again as it is touched.
        let v: Vec<u64> = (0..1000).map(|i| i * 3).collect();
        assert_eq!(v.iter().sum::<u64>(), 1_498_500);
        assert!(rss_file() < before, "{} kB then {} kB", before, rss_file());
    }
}
