//! A tiny static linker: one ELF64 relocatable object (what LLVM emits for a kernel) → one
//! flat, position-independent image with every relocation resolved and checked, the entry
//! point at offset 0. This is what makes LLVM code fit the host blob format
//! ([`tessera_host::blob`]): the loader maps the image anywhere and jumps to offset 0, with
//! nothing left to patch.
//!
//! Only what a kernel object holds is accepted: allocated code and read-only data sections,
//! symbols defined in them, and PC-relative relocations (x86_64 `PC32`/`PLT32`/`PC64`). An
//! undefined symbol (a libcall the module does not define), an absolute relocation (it would
//! need patching at load time) or writable data is refused with an error naming it.

/// Why an object did not link; every case is a code generator bug or an unsupported
/// construct, reported as `TargetError::Codegen` by the caller.
pub type LinkError = String;

const SHT_PROGBITS: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_STRTAB: u32 = 3;
const SHT_RELA: u32 = 4;
const SHT_NOBITS: u32 = 8;
const SHT_REL: u32 = 9;
const SHF_WRITE: u64 = 1;
const SHF_ALLOC: u64 = 2;
const EM_X86_64: u16 = 62;

const R_X86_64_NONE: u32 = 0;
const R_X86_64_PC32: u32 = 2;
const R_X86_64_PLT32: u32 = 4;
const R_X86_64_PC64: u32 = 24;

/// Little-endian reads that fail instead of panicking on a short object.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn get<const N: usize>(&self, at: u64) -> Result<[u8; N], LinkError> {
        let at = usize::try_from(at).map_err(|_| "object offset overflows".to_string())?;
        self.0
            .get(at..at.saturating_add(N))
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| format!("object is truncated at offset {at}"))
    }
    fn u16(&self, at: u64) -> Result<u16, LinkError> {
        Ok(u16::from_le_bytes(self.get(at)?))
    }
    fn u32(&self, at: u64) -> Result<u32, LinkError> {
        Ok(u32::from_le_bytes(self.get(at)?))
    }
    fn u64(&self, at: u64) -> Result<u64, LinkError> {
        Ok(u64::from_le_bytes(self.get(at)?))
    }
    fn slice(&self, at: u64, len: u64) -> Result<&[u8], LinkError> {
        let end = at
            .checked_add(len)
            .ok_or_else(|| "object section overflows".to_string())?;
        self.0
            .get(at as usize..end as usize)
            .ok_or_else(|| format!("object section at {at}+{len} lies past its end"))
    }
}

struct Section {
    kind: u32,
    flags: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    align: u64,
    name: String,
}

/// Links `obj` into a flat image whose entry point `entry` sits at offset 0.
pub fn link(obj: &[u8], entry: &str) -> Result<Vec<u8>, LinkError> {
    let b = Bytes(obj);
    if obj.get(0..4) != Some(b"\x7fELF") || obj.get(4) != Some(&2) || obj.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 object".into());
    }
    let machine = b.u16(18)?;
    if machine != EM_X86_64 {
        return Err(format!(
            "ELF machine {machine}: only x86_64 objects are linked"
        ));
    }
    let shoff = b.u64(40)?;
    let shentsize = b.u16(58)? as u64;
    let shnum = b.u16(60)? as u64;
    let shstrndx = b.u16(62)? as u64;
    if shentsize != 64 {
        return Err(format!("ELF section header size {shentsize}"));
    }
    let mut secs = Vec::with_capacity(shnum as usize);
    for i in 0..shnum {
        let h = shoff + i * 64;
        secs.push(Section {
            kind: b.u32(h + 4)?,
            flags: b.u64(h + 8)?,
            offset: b.u64(h + 24)?,
            size: b.u64(h + 32)?,
            link: b.u32(h + 40)?,
            info: b.u32(h + 44)?,
            align: b.u64(h + 48)?.max(1),
            name: String::new(),
        });
        let name_off = b.u32(h)? as u64;
        let _ = name_off;
    }
    // Section names, for the errors.
    if let Some(strtab) = secs.get(shstrndx as usize).map(|s| (s.offset, s.size)) {
        let names = b.slice(strtab.0, strtab.1)?.to_vec();
        for i in 0..shnum {
            let off = b.u32(shoff + i * 64)? as usize;
            let n = names
                .get(off..)
                .and_then(|s| s.split(|&c| c == 0).next())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .unwrap_or_default();
            secs[i as usize].name = n;
        }
    }

    // Lay out the allocated sections: the one holding the entry point first (found below
    // through the symbol table), then the others in order.
    let symtab = secs
        .iter()
        .position(|s| s.kind == SHT_SYMTAB)
        .ok_or("object has no symbol table")?;
    let (sym_off, sym_size, sym_link) = {
        let s = &secs[symtab];
        (s.offset, s.size, s.link as usize)
    };
    let strtab = secs
        .get(sym_link)
        .filter(|s| s.kind == SHT_STRTAB)
        .ok_or("the symbol table names no string table")?;
    let strs = b.slice(strtab.offset, strtab.size)?;
    struct Sym {
        name: String,
        shndx: u16,
        value: u64,
    }
    let mut syms = Vec::new();
    for i in 0..sym_size / 24 {
        let at = sym_off + i * 24;
        let name_off = b.u32(at)? as usize;
        let name = strs
            .get(name_off..)
            .and_then(|s| s.split(|&c| c == 0).next())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .unwrap_or_default();
        syms.push(Sym {
            name,
            shndx: b.u16(at + 6)?,
            value: b.u64(at + 8)?,
        });
    }
    let entry_sym = syms
        .iter()
        .find(|s| s.name == entry && s.shndx != 0)
        .ok_or_else(|| format!("object does not define `{entry}`"))?;
    let entry_sec = entry_sym.shndx as usize;

    let mut order: Vec<usize> = (0..secs.len())
        // Unwind tables are not needed: kernel code never unwinds (`nounwind`).
        .filter(|&i| {
            secs[i].flags & SHF_ALLOC != 0 && secs[i].size > 0 && secs[i].name != ".eh_frame"
        })
        .collect();
    order.sort_by_key(|&i| i != entry_sec);
    let mut addr = vec![None::<u64>; secs.len()];
    let mut image: Vec<u8> = Vec::new();
    for &i in &order {
        let s = &secs[i];
        if s.flags & SHF_WRITE != 0 {
            return Err(format!(
                "object has writable section `{}`; kernel code may not keep state",
                s.name
            ));
        }
        if s.kind != SHT_PROGBITS && s.kind != SHT_NOBITS {
            return Err(format!("object section `{}` of type {}", s.name, s.kind));
        }
        let at = (image.len() as u64).div_ceil(s.align) * s.align;
        image.resize(at as usize, 0);
        if s.kind == SHT_NOBITS {
            image.resize((at + s.size) as usize, 0);
        } else {
            image.extend_from_slice(b.slice(s.offset, s.size)?);
        }
        addr[i] = Some(at);
    }
    let entry_at = addr[entry_sec]
        .unwrap_or(u64::MAX)
        .wrapping_add(entry_sym.value);
    if entry_at != 0 {
        return Err(format!(
            "`{entry}` lies at offset {entry_at} of the image, not at 0"
        ));
    }

    // Resolve every relocation that applies to a laid-out section.
    for rs in secs.iter() {
        if rs.kind == SHT_REL {
            return Err(format!(
                "object has REL section `{}` (x86_64 uses RELA)",
                rs.name
            ));
        }
        if rs.kind != SHT_RELA {
            continue;
        }
        let target = rs.info as usize;
        let Some(Some(base)) = addr.get(target).copied() else {
            // Relocations of unallocated sections (debug info) do not reach the image.
            continue;
        };
        for j in 0..rs.size / 24 {
            let at = rs.offset + j * 24;
            let r_off = b.u64(at)?;
            let info = b.u64(at + 8)?;
            let addend = b.u64(at + 16)? as i64;
            let (sym_i, kind) = ((info >> 32) as usize, info as u32);
            if kind == R_X86_64_NONE {
                continue;
            }
            let sym = syms
                .get(sym_i)
                .ok_or_else(|| format!("relocation names symbol #{sym_i}, which is missing"))?;
            if sym.shndx == 0 {
                return Err(format!(
                    "kernel code calls `{}`, which blob code cannot link against",
                    sym.name
                ));
            }
            let s_addr = match addr.get(sym.shndx as usize) {
                Some(Some(a)) => a.wrapping_add(sym.value),
                _ => {
                    return Err(format!(
                        "relocation against `{}` in a section outside the image",
                        sym.name
                    ))
                }
            };
            let p = base.wrapping_add(r_off);
            let value = (s_addr as i64).wrapping_add(addend).wrapping_sub(p as i64);
            let p = p as usize;
            match kind {
                R_X86_64_PC32 | R_X86_64_PLT32 => {
                    let v = i32::try_from(value)
                        .map_err(|_| format!("relocation at {p} out of 32-bit range"))?;
                    let slot = image
                        .get_mut(p..p + 4)
                        .ok_or_else(|| format!("relocation at {p} lies past the image"))?;
                    slot.copy_from_slice(&v.to_le_bytes());
                }
                R_X86_64_PC64 => {
                    let slot = image
                        .get_mut(p..p + 8)
                        .ok_or_else(|| format!("relocation at {p} lies past the image"))?;
                    slot.copy_from_slice(&value.to_le_bytes());
                }
                other => {
                    return Err(format!(
                        "relocation type {other} against `{}` (only PC-relative ones are resolved; an absolute one would need patching at load)",
                        sym.name
                    ))
                }
            }
        }
    }
    if image.is_empty() {
        return Err("object holds no code".into());
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_an_object() {
        assert_eq!(
            link(b"", "f").unwrap_err(),
            "not a little-endian ELF64 object"
        );
        let mut obj = vec![0x7f, b'E', b'L', b'F', 2, 1];
        obj.resize(18, 0);
        assert!(link(&obj, "f").unwrap_err().contains("truncated"));
    }
}
