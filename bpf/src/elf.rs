//! Whether an ELF file defines a symbol, read from its symbol tables (`.symtab` and
//! `.dynsym`, where libbpf looks for a uprobe's function too).
//!
//! Asked before attaching the inference uprobes, so that an app that does not use the
//! client library (a client written from the protocol alone, in Python say) is counted
//! from its shared page quietly, rather than after a failed attach that libbpf reports as
//! a warning.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const SHT_SYMTAB: u32 = 2;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
/// A symbol or string table larger than this is not believed (a damaged file).
const MAX_TABLE_BYTES: u64 = 256 << 20;

/// Whether the ELF file at `path` defines `symbol` (an undefined reference, as a program
/// has to the functions of a library it links, does not count). A file that is not ELF
/// defines nothing.
pub fn defines_symbol(path: &Path, symbol: &str) -> io::Result<bool> {
    let file = File::open(path)?;
    let mut ident = [0u8; 16];
    if file.read_exact_at(&mut ident, 0).is_err() || ident[..4] != *b"\x7fELF" {
        return Ok(false);
    }
    let elf = Elf {
        file,
        wide: match ident[4] {
            1 => false,
            2 => true,
            _ => return Ok(false),
        },
        little: match ident[5] {
            1 => true,
            2 => false,
            _ => return Ok(false),
        },
    };
    elf.defines(symbol.as_bytes())
}

struct Elf {
    file: File,
    /// ELFCLASS64.
    wide: bool,
    little: bool,
}

struct Section {
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

impl Elf {
    fn defines(&self, symbol: &[u8]) -> io::Result<bool> {
        let (shoff, shentsize, mut shnum) = if self.wide {
            (
                self.u64_at(0x28)?,
                self.u16_at(0x3a)?,
                self.u16_at(0x3c)? as u64,
            )
        } else {
            (
                self.u32_at(0x20)? as u64,
                self.u16_at(0x2e)?,
                self.u16_at(0x30)? as u64,
            )
        };
        if shoff == 0 {
            return Ok(false);
        }
        if shnum == 0 {
            // Extended numbering: the count is the first section header's size.
            shnum = self.section(shoff)?.size;
        }
        let sections: Vec<Section> = (0..shnum.min(1 << 16))
            .map(|i| self.section(shoff + i * u64::from(shentsize)))
            .collect::<io::Result<_>>()?;
        for table in sections
            .iter()
            .filter(|s| s.kind == SHT_SYMTAB || s.kind == SHT_DYNSYM)
        {
            let Some(strings) = sections.get(table.link as usize) else {
                continue;
            };
            let names = self.bytes(strings.offset, strings.size)?;
            let symbols = self.bytes(table.offset, table.size)?;
            let entry = if self.wide { 24 } else { 16 };
            for raw in symbols.chunks_exact(entry) {
                let name = self.u32_of(&raw[0..4]) as usize;
                let shndx = self.u16_of(if self.wide { &raw[6..8] } else { &raw[14..16] });
                if shndx == SHN_UNDEF {
                    continue;
                }
                let Some(rest) = names.get(name..) else {
                    continue;
                };
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                if &rest[..end] == symbol {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn section(&self, at: u64) -> io::Result<Section> {
        Ok(if self.wide {
            Section {
                kind: self.u32_at(at + 4)?,
                offset: self.u64_at(at + 0x18)?,
                size: self.u64_at(at + 0x20)?,
                link: self.u32_at(at + 0x28)?,
            }
        } else {
            Section {
                kind: self.u32_at(at + 4)?,
                offset: self.u32_at(at + 0x10)? as u64,
                size: self.u32_at(at + 0x14)? as u64,
                link: self.u32_at(at + 0x18)?,
            }
        })
    }

    fn bytes(&self, at: u64, len: u64) -> io::Result<Vec<u8>> {
        if len > MAX_TABLE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("an ELF table of {len} bytes"),
            ));
        }
        let mut buffer = vec![0u8; len as usize];
        self.file.read_exact_at(&mut buffer, at)?;
        Ok(buffer)
    }

    fn u16_at(&self, at: u64) -> io::Result<u16> {
        Ok(self.u16_of(&self.bytes(at, 2)?))
    }

    fn u32_at(&self, at: u64) -> io::Result<u32> {
        Ok(self.u32_of(&self.bytes(at, 4)?))
    }

    fn u64_at(&self, at: u64) -> io::Result<u64> {
        let b: [u8; 8] = self.bytes(at, 8)?.try_into().expect("8 bytes read");
        Ok(if self.little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    fn u16_of(&self, b: &[u8]) -> u16 {
        let b = [b[0], b[1]];
        if self.little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    }

    fn u32_of(&self, b: &[u8]) -> u32 {
        let b = [b[0], b[1], b[2], b[3]];
        if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defined here so that this test binary has a symbol of its own to find.
    #[no_mangle]
    #[inline(never)]
    pub extern "C" fn dnngov_elf_test_marker() -> u32 {
        std::hint::black_box(7)
    }

    #[test]
    fn finds_a_defined_symbol_and_not_a_missing_one() {
        assert_eq!(dnngov_elf_test_marker(), 7);
        let exe = std::env::current_exe().unwrap();
        assert!(defines_symbol(&exe, "dnngov_elf_test_marker").unwrap());
        assert!(!defines_symbol(&exe, "dnngov_elf_test_marker_absent").unwrap());
        assert!(
            !defines_symbol(&exe, "dnngov_elf_test_marke").unwrap(),
            "whole names only"
        );
    }

    #[test]
    fn a_reference_to_a_library_function_is_not_a_definition() {
        // Every Rust program on Linux calls libc's `write`, which it does not define.
        let exe = std::env::current_exe().unwrap();
        assert!(!defines_symbol(&exe, "write").unwrap());
    }

    #[test]
    fn a_file_that_is_not_elf_defines_nothing() {
        let dir = std::env::temp_dir().join(format!("dnngov-elf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("script.py");
        std::fs::write(&path, "#!/usr/bin/env python3\nprint('hi')\n").unwrap();
        assert!(!defines_symbol(&path, "dnngov_marker_begin").unwrap());
        std::fs::write(&path, "").unwrap();
        assert!(!defines_symbol(&path, "dnngov_marker_begin").unwrap());
        assert!(defines_symbol(&dir.join("missing"), "x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
