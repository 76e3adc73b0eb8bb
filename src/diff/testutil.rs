//! Test helpers: layer tars built entry by entry, with names the `tar` crate would refuse.

use tar::{EntryType, Header};

/// One entry of a test layer.
pub enum Entry<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str, u32, u32),
}

/// A ustar header named `name` byte for byte (no checks, so `../x` and `/x` are possible).
fn header(name: &str, kind: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_uid(u64::from(crate::sys::geteuid()));
    header.set_gid(u64::from(crate::sys::getegid()));
    header.set_device_major(0).expect("ustar");
    header.set_device_minor(0).expect("ustar");
    let field = &mut header.as_ustar_mut().expect("ustar").name;
    assert!(name.len() <= field.len(), "test name too long");
    field[..name.len()].copy_from_slice(name.as_bytes());
    header
}

/// The bytes of a tar holding `entries` in order.
pub fn layer(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (mut header, data): (Header, &[u8]) = match *entry {
            Entry::Dir(name, mode) => (header(name, EntryType::Directory, mode, 0), b""),
            Entry::File(name, data, mode) => (
                header(name, EntryType::Regular, mode, data.len() as u64),
                data,
            ),
            Entry::Symlink(name, target) | Entry::Link(name, target) => {
                let kind = if matches!(entry, Entry::Symlink(..)) {
                    EntryType::Symlink
                } else {
                    EntryType::Link
                };
                // A hard link's mode lands on the shared inode, as with containerd.
                let mode = if kind == EntryType::Symlink {
                    0o777
                } else {
                    0o644
                };
                let mut header = header(name, kind, mode, 0);
                let field = &mut header.as_ustar_mut().expect("ustar").linkname;
                field[..target.len()].copy_from_slice(target.as_bytes());
                (header, b"")
            }
            Entry::Fifo(name) => (header(name, EntryType::Fifo, 0o644, 0), b""),
            Entry::CharDevice(name, major, minor) => {
                let mut header = header(name, EntryType::Char, 0o666, 0);
                header.set_device_major(major).expect("ustar");
                header.set_device_minor(minor).expect("ustar");
                (header, b"")
            }
        };
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish")
}
