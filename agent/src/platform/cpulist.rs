//! CPU lists as the kernel prints them: `0-3,8-11` in `online`, `0 1 2 3` in
//! `related_cpus`. One parser for both, because splitting on `-` alone breaks on `0` and on
//! mixed lists.

use std::fmt;

/// A set of CPU numbers, kept sorted and unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuList(Vec<u32>);

/// Why a CPU list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a CPU list: {why}")]
pub struct CpuListError {
    pub text: String,
    pub why: String,
}

impl CpuList {
    pub fn new(mut cpus: Vec<u32>) -> CpuList {
        cpus.sort_unstable();
        cpus.dedup();
        CpuList(cpus)
    }

    /// Accepts commas and whitespace as separators, ranges `a-b` and the kernel's strided
    /// form `a-b:step` (bitmap_parselist also allows `a-b:used/group`; no CPU file prints it).
    pub fn parse(text: &str) -> Result<CpuList, CpuListError> {
        let fail = |why: String| CpuListError {
            text: text.to_string(),
            why,
        };
        let number = |s: &str| -> Result<u32, CpuListError> {
            s.trim()
                .parse::<u32>()
                .map_err(|_| fail(format!("{s:?} is not a CPU number")))
        };
        let mut cpus = Vec::new();
        for item in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
        {
            let (range, step) = match item.split_once(':') {
                Some((range, step)) => (range, number(step)?),
                None => (item, 1),
            };
            if step == 0 {
                return Err(fail(format!("{item:?} has a zero stride")));
            }
            match range.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(fail(format!("{item:?} is a descending range")));
                    }
                    cpus.extend((first..=last).step_by(step as usize));
                }
                None => cpus.push(number(range)?),
            }
        }
        Ok(CpuList::new(cpus))
    }

    pub fn cpus(&self) -> &[u32] {
        &self.0
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.binary_search(&cpu).is_ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Prints the kernel's compact form, so logs and messages read like sysfs.
impl fmt::Display for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut i = 0;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_and_singles_mixed() {
        let l = CpuList::parse("0-3,8-11\n").unwrap();
        assert_eq!(l.cpus(), &[0, 1, 2, 3, 8, 9, 10, 11]);
        assert_eq!(CpuList::parse("0").unwrap().cpus(), &[0]);
        assert_eq!(CpuList::parse("0,2,5-6").unwrap().cpus(), &[0, 2, 5, 6]);
    }

    #[test]
    fn parses_space_separated_related_cpus() {
        assert_eq!(CpuList::parse("4 5 6 7\n").unwrap().cpus(), &[4, 5, 6, 7]);
    }

    #[test]
    fn empty_list_is_empty_not_an_error() {
        assert!(CpuList::parse("\n").unwrap().is_empty());
    }

    #[test]
    fn parses_strided_ranges() {
        assert_eq!(CpuList::parse("0-7:2").unwrap().cpus(), &[0, 2, 4, 6]);
    }

    #[test]
    fn rejects_malformed_lists() {
        assert!(CpuList::parse("3-1").is_err());
        assert!(CpuList::parse("a-b").is_err());
        assert!(CpuList::parse("1-").is_err());
        assert!(CpuList::parse("0-3:0").is_err());
    }

    #[test]
    fn prints_compact_form() {
        let l = CpuList::new(vec![11, 0, 1, 2, 3, 8, 9, 10, 5]);
        assert_eq!(l.to_string(), "0-3,5,8-11");
    }
}
