//! The file source: files, directories and globs, plain or `.gz`, read in sorted order as one
//! stream. Positions are per file (lines and byte offset), so a restart seeks plain files to
//! where the last durable epoch ended, and a file that grew is read on from there.

use super::{Batch, LineReader, LineSource, Poll, Position, Positions, SourceError};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Expands paths, directories (recursively) and glob patterns into a sorted, de-duplicated
/// file list. A pattern or path that matches nothing is an error.
pub fn expand(args: &[String]) -> Result<Vec<PathBuf>, SourceError> {
    let mut files = Vec::new();
    for arg in args {
        let before = files.len();
        if arg.contains(['*', '?', '[']) {
            let paths = glob::glob(arg).map_err(|e| SourceError::Spec(format!("{arg}: {e}")))?;
            for path in paths {
                let path = path.map_err(|e| SourceError::Spec(format!("{arg}: {e}")))?;
                collect(&path, &mut files)?;
            }
        } else {
            collect(Path::new(arg), &mut files)?;
        }
        if files.len() == before {
            return Err(SourceError::Spec(format!("{arg}: no input files")));
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let meta = std::fs::metadata(path).map_err(|e| SourceError::io(path.display(), e))?;
    if meta.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| SourceError::io(path.display(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::io(path.display(), e))?;
            collect(&entry.path(), out)?;
        }
    } else if meta.is_file() {
        out.push(path.to_owned());
    }
    Ok(())
}

fn is_gzip(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
}

/// Reads a list of files one after the other.
pub struct FileSource {
    files: Vec<PathBuf>,
    cap: usize,
    next_file: usize,
    current: Option<OpenFile>,
    positions: Positions,
}

struct OpenFile {
    name: String,
    reader: LineReader<Box<dyn BufRead + Send>>,
    lines: u64,
    /// Offset of the reader's start within the stream (after a seek).
    base: u64,
}

impl FileSource {
    pub fn new(files: Vec<PathBuf>, max_line_bytes: usize) -> Self {
        FileSource {
            files,
            cap: max_line_bytes,
            next_file: 0,
            current: None,
            positions: Positions::new(),
        }
    }

    fn open(&self, path: &Path) -> Result<OpenFile, SourceError> {
        let name = path.display().to_string();
        let start = self.positions.get(&name).copied().unwrap_or_default();
        let mut file = File::open(path).map_err(|e| SourceError::io(&name, e))?;
        let mut base = 0;
        let inner: Box<dyn BufRead + Send> = if is_gzip(path) {
            Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(file)))
        } else {
            file.seek(SeekFrom::Start(start.offset))
                .map_err(|e| SourceError::io(&name, e))?;
            base = start.offset;
            Box::new(BufReader::with_capacity(1 << 16, file))
        };
        let mut open = OpenFile {
            name,
            reader: LineReader::new(inner, self.cap),
            lines: 0,
            base,
        };
        if is_gzip(path) {
            // No seeking in a gzip stream: skip the committed lines.
            while open.lines < start.lines {
                match open
                    .reader
                    .next_line()
                    .map_err(|e| SourceError::io(&open.name, e))?
                {
                    Some(_) => open.lines += 1,
                    None => break,
                }
            }
        } else {
            open.lines = start.lines;
        }
        Ok(open)
    }
}

impl OpenFile {
    fn position(&self) -> Position {
        Position {
            lines: self.lines,
            offset: self.base + self.reader.offset(),
        }
    }
}

impl LineSource for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn replayable(&self) -> bool {
        true
    }

    fn poll(&mut self, max_lines: usize) -> Result<Poll, SourceError> {
        loop {
            if self.current.is_none() {
                let Some(path) = self.files.get(self.next_file).cloned() else {
                    return Ok(Poll::Finished);
                };
                self.next_file += 1;
                self.current = Some(self.open(&path)?);
            }
            let Some(file) = self.current.as_mut() else {
                continue;
            };
            let first_pos = file.lines;
            let mut lines = Vec::with_capacity(max_lines.min(4096));
            while lines.len() < max_lines {
                match file
                    .reader
                    .next_line()
                    .map_err(|e| SourceError::io(&file.name, e))?
                {
                    Some(line) => {
                        lines.push(line);
                        file.lines += 1;
                    }
                    None => break,
                }
            }
            self.positions.insert(file.name.clone(), file.position());
            if lines.is_empty() {
                self.current = None;
                continue;
            }
            return Ok(Poll::Batch(Batch {
                origin: file.name.clone(),
                first_pos,
                lines,
            }));
        }
    }

    fn positions(&self) -> Positions {
        self.positions.clone()
    }

    fn resume(&mut self, positions: &Positions) -> Result<(), SourceError> {
        self.positions = positions.clone();
        Ok(())
    }
}

/// Reads a whole (possibly gzipped) file into lines, for tests and tools.
pub fn read_lines(path: &Path) -> Result<Vec<String>, SourceError> {
    let file = File::open(path).map_err(|e| SourceError::io(path.display(), e))?;
    let mut text = String::new();
    let mut reader: Box<dyn Read> = if is_gzip(path) {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    reader
        .read_to_string(&mut text)
        .map_err(|e| SourceError::io(path.display(), e))?;
    Ok(text.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn drain(src: &mut FileSource) -> Vec<(String, u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Poll::Batch(b) = src.poll(2).unwrap() {
            for (i, l) in b.lines.into_iter().enumerate() {
                out.push((b.origin.clone(), b.first_pos + i as u64, l.bytes));
            }
        }
        out
    }

    #[test]
    fn directories_globs_and_gzip_read_in_sorted_order_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.log"), "b1\nb2\nb3\n").unwrap();
        let mut gz = GzEncoder::new(
            File::create(dir.path().join("a.log.gz")).unwrap(),
            flate2::Compression::fast(),
        );
        gz.write_all(b"a1\na2\n").unwrap();
        gz.finish().unwrap();
        let files = expand(&[dir.path().display().to_string()]).unwrap();
        assert_eq!(files.len(), 2);
        let globbed = expand(&[format!("{}/*.log", dir.path().display())]).unwrap();
        assert_eq!(globbed.len(), 1);

        let mut src = FileSource::new(files.clone(), 100);
        let all = drain(&mut src);
        let texts: Vec<&[u8]> = all.iter().map(|(_, _, b)| b.as_slice()).collect();
        assert_eq!(texts, [b"a1", b"a2", b"b1", b"b2", b"b3"]);

        // Resume after the first gz line and the first two plain lines.
        let mut positions = Positions::new();
        let mut partial = FileSource::new(files.clone(), 100);
        let Poll::Batch(first) = partial.poll(1).unwrap() else {
            panic!()
        };
        assert_eq!(first.lines.len(), 1);
        positions.extend(partial.positions());
        let mut plain = FileSource::new(vec![files[1].clone()], 100);
        let _ = plain.poll(2).unwrap();
        positions.extend(plain.positions());
        let mut resumed = FileSource::new(files, 100);
        resumed.resume(&positions).unwrap();
        let rest: Vec<(u64, Vec<u8>)> = drain(&mut resumed)
            .into_iter()
            .map(|(_, p, b)| (p, b))
            .collect();
        assert_eq!(rest, [(1, b"a2".to_vec()), (2, b"b3".to_vec())]);
    }

    #[test]
    fn a_missing_input_is_an_error() {
        assert!(expand(&["/nonexistent/x.log".into()]).is_err());
        assert!(expand(&["/nonexistent/*.log".into()]).is_err());
    }
}
