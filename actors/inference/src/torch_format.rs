//! Writes a PyTorch `state_dict` file (`torch.save`'s zip format: a pickled
//! `OrderedDict` of `torch._utils._rebuild_tensor_v2` calls in
//! `archive/data.pkl`, one little-endian storage per tensor in
//! `archive/data/<n>`), so `flotilla model init --format pytorch` can ship
//! weights the way CarlaRL does (`model.pt`) without Python. The worker
//! reads such files back through candle's pickle reader
//! ([`crate::artifacts`]).

use std::io::Write;

/// A tensor to write: name, row-major values, shape.
pub struct NamedTensor<'a> {
    /// The `state_dict` key, e.g. `net.0.weight`.
    pub name: &'a str,
    /// Row-major values.
    pub values: &'a [f32],
    /// Shape.
    pub shape: &'a [usize],
}

/// Pickle opcodes used (protocol 2).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const GLOBAL: u8 = b'c';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const REDUCE: u8 = b'R';
    pub const MARK: u8 = b'(';
    pub const BINUNICODE: u8 = b'X';
    pub const BININT: u8 = b'J';
    pub const TUPLE: u8 = b't';
    pub const BINPERSID: u8 = b'Q';
    pub const NEWFALSE: u8 = 0x89;
    pub const SETITEMS: u8 = b'u';
    pub const STOP: u8 = b'.';
}

struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(op::GLOBAL);
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }

    fn string(&mut self, s: &str) {
        self.0.push(op::BINUNICODE);
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn int(&mut self, n: usize) {
        self.0.push(op::BININT);
        self.0.extend_from_slice(&(n as i32).to_le_bytes());
    }

    fn ints(&mut self, ns: &[usize]) {
        self.0.push(op::MARK);
        for n in ns {
            self.int(*n);
        }
        self.0.push(op::TUPLE);
    }

    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend_from_slice(&[op::EMPTY_TUPLE, op::REDUCE]);
    }

    /// `_rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())`.
    fn tensor(&mut self, key: usize, t: &NamedTensor) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(op::MARK);
        self.0.push(op::MARK);
        self.string("storage");
        self.global("torch", "FloatStorage");
        self.string(&key.to_string());
        self.string("cpu");
        self.int(t.values.len());
        self.0.extend_from_slice(&[op::TUPLE, op::BINPERSID]);
        self.int(0);
        self.ints(t.shape);
        let stride: Vec<usize> = (0..t.shape.len())
            .map(|i| t.shape[i + 1..].iter().product())
            .collect();
        self.ints(&stride);
        self.0.push(op::NEWFALSE);
        self.ordered_dict();
        self.0.extend_from_slice(&[op::TUPLE, op::REDUCE]);
    }
}

/// Writes `tensors` as a `torch.save(state_dict)` file at `path`.
pub fn write_state_dict(path: &std::path::Path, tensors: &[NamedTensor]) -> Result<(), String> {
    for t in tensors {
        if t.values.len() != t.shape.iter().product::<usize>() {
            return Err(format!(
                "{}: {} values for shape {:?}",
                t.name,
                t.values.len(),
                t.shape
            ));
        }
    }
    let mut pickle = Pickle(vec![op::PROTO, 2]);
    pickle.ordered_dict();
    pickle.0.push(op::MARK);
    for (key, t) in tensors.iter().enumerate() {
        pickle.string(t.name);
        pickle.tensor(key, t);
    }
    pickle.0.extend_from_slice(&[op::SETITEMS, op::STOP]);
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut zip = zip::ZipWriter::new(file);
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| -> Result<(), String> {
        zip.start_file(format!("archive/{name}"), stored)
            .and_then(|()| zip.write_all(bytes).map_err(Into::into))
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    entry("data.pkl", &pickle.0)?;
    entry("byteorder", b"little")?;
    for (key, t) in tensors.iter().enumerate() {
        let bytes: Vec<u8> = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
        entry(&format!("data/{key}"), &bytes)?;
    }
    entry("version", b"3\n")?;
    zip.finish()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_reads_back_what_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [0.5f32, -0.5];
        write_state_dict(
            &path,
            &[
                NamedTensor {
                    name: "net.0.weight",
                    values: &w,
                    shape: &[2, 3],
                },
                NamedTensor {
                    name: "net.0.bias",
                    values: &b,
                    shape: &[2],
                },
            ],
        )
        .unwrap();
        let mut read = candle_core::pickle::read_all(&path).unwrap();
        read.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(read[0].0, "net.0.bias");
        assert_eq!(read[0].1.to_vec1::<f32>().unwrap(), b);
        assert_eq!(
            read[1].1.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]]
        );
    }
}
