//! The stdout sink: every document as one NDJSON line (`{"_index","_id","_source"}`), for
//! piping into other tools. It keeps no state, so a restart may repeat documents of the
//! epoch that was in flight; their ids tell the repeats apart.

use super::{DocRef, Sink, SinkError, SinkState};
use std::io::{BufWriter, Stdout, Write};

/// Writes documents to the process's standard output.
pub struct StdoutSink {
    out: BufWriter<Stdout>,
}

impl StdoutSink {
    pub fn new() -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(1 << 16, std::io::stdout()),
        }
    }
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, doc: &DocRef<'_>) -> Result<(), SinkError> {
        let line = doc.envelope();
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| SinkError::io("stdout", e))
    }

    fn commit(&mut self) -> Result<SinkState, SinkError> {
        self.out.flush().map_err(|e| SinkError::io("stdout", e))?;
        Ok(SinkState::new())
    }

    fn restore(&mut self, _state: Option<&SinkState>) -> Result<(), SinkError> {
        Ok(())
    }
}
