//! What `/proc/self/mountinfo` says about this mount namespace: mount points, and the lower
//! dirs overlayfs mounts use (so the image store never collects a layer a container runs on).

use std::path::PathBuf;

/// One mount: where it is, its filesystem type and its superblock options.
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// Every mount of this mount namespace.
pub fn mounts() -> std::io::Result<Vec<Mount>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info.lines().filter_map(parse_line).collect())
}

/// `36 35 98:0 /root /point rw,noatime shared:1 - ext4 /dev/root rw,errors=continue`: the
/// optional fields end at ` - `, after which come the type, the source and the options.
fn parse_line(line: &str) -> Option<Mount> {
    let (head, tail) = line.split_once(" - ")?;
    let point = head.split_whitespace().nth(4)?;
    let mut tail = tail.split_whitespace();
    let fstype = tail.next()?.to_string();
    let _source = tail.next();
    Some(Mount {
        point: PathBuf::from(unescape(point)),
        fstype,
        options: tail.next().map(unescape).unwrap_or_default(),
    })
}

/// Every mount point.
pub fn mount_points() -> Vec<PathBuf> {
    mounts()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.point)
        .collect()
}

/// The lower dirs of every overlayfs mount.
pub fn overlay_lower_dirs() -> Vec<PathBuf> {
    mounts()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.fstype == "overlay")
        .flat_map(|m| lower_dirs(&m.options))
        .collect()
}

fn lower_dirs(options: &str) -> Vec<PathBuf> {
    options
        .split(',')
        .filter_map(|o| o.strip_prefix("lowerdir="))
        .flat_map(|l| l.split(':'))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn an_overlay_line_gives_its_point_and_lower_dirs() {
        let m = parse_line(
            "812 30 0:77 / /run/c/rootfs rw,relatime shared:400 - overlay overlay rw,lowerdir=/d/layers/aa:/d/layers/b\\040b,upperdir=/u,workdir=/w",
        )
        .unwrap();
        assert_eq!(m.point, PathBuf::from("/run/c/rootfs"));
        assert_eq!(m.fstype, "overlay");
        assert_eq!(
            lower_dirs(&m.options),
            vec![
                PathBuf::from("/d/layers/aa"),
                PathBuf::from("/d/layers/b b")
            ]
        );
        let plain = parse_line("36 35 98:0 / /mnt rw - ext4 /dev/vda rw").unwrap();
        assert!(lower_dirs(&plain.options).is_empty());
        assert!(parse_line("garbage").is_none());
    }
}
