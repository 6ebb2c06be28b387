//! A vector stored in fixed-size chunks: it never reallocates, so thousands of growing
//! tables (one per simulated node) do not fragment the heap, and it wastes at most one
//! partly filled chunk.

/// Elements per chunk.
const CHUNK: usize = 512;

pub(crate) struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> ChunkedVec<T> {
    pub fn new() -> Self {
        ChunkedVec {
            chunks: Vec::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> &T {
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut T {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn push(&mut self, v: T) {
        if self.len.is_multiple_of(CHUNK) && self.len / CHUNK == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[self.len / CHUNK].push(v);
        self.len += 1;
    }

    /// Removes element `i`, moving the last element into its place.
    pub fn swap_remove(&mut self, i: usize) -> T {
        let last = self.len - 1;
        if i != last {
            self.swap(i, last);
        }
        let chunk = last / CHUNK;
        let v = self.chunks[chunk].pop();
        self.len -= 1;
        if self.chunks[chunk].is_empty() {
            self.chunks.pop();
        }
        match v {
            Some(v) => v,
            None => unreachable!("len counts the elements held"),
        }
    }

    pub fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        let (ca, cb) = (a / CHUNK, b / CHUNK);
        if ca == cb {
            self.chunks[ca].swap(a % CHUNK, b % CHUNK);
        } else {
            let (lo, hi, lo_i, hi_i) = if ca < cb {
                (ca, cb, a, b)
            } else {
                (cb, ca, b, a)
            };
            let (left, right) = self.chunks.split_at_mut(hi);
            std::mem::swap(&mut left[lo][lo_i % CHUNK], &mut right[0][hi_i % CHUNK]);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.chunks.iter_mut().flat_map(|c| c.iter_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec() {
        let mut c = ChunkedVec::new();
        let mut v = Vec::new();
        for i in 0..2000u32 {
            c.push(i);
            v.push(i);
        }
        for i in [0usize, 511, 512, 1500, 1023] {
            assert_eq!(c.swap_remove(i), v.swap_remove(i));
        }
        c.swap(3, 1600);
        v.swap(3, 1600);
        assert_eq!(c.len(), v.len());
        assert!(c.iter().eq(v.iter()));
        while !v.is_empty() {
            assert_eq!(c.swap_remove(0), v.swap_remove(0));
        }
        assert!(c.is_empty());
    }
}
