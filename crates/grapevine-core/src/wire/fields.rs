//! Fields several messages share: a member's name, and a name with its address.

use super::codec::{Reader, Writer};
use super::DecodeError;
use crate::name::{Name, MAX_NAME_LEN};
use std::net::SocketAddr;

/// A member's name and the address it can be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    /// The member's name.
    pub name: Name,
    /// Its advertised address.
    pub addr: SocketAddr,
}

/// Reads a member's name.
pub(crate) fn read_name(r: &mut Reader<'_>, what: &'static str) -> Result<Name, DecodeError> {
    let s = r.str(what, MAX_NAME_LEN)?;
    Name::new(s).map_err(|_| DecodeError::InvalidName { what })
}

/// Reads a name and address.
pub(crate) fn read_node(r: &mut Reader<'_>, what: &'static str) -> Result<NodeAddr, DecodeError> {
    Ok(NodeAddr {
        name: read_name(r, what)?,
        addr: r.addr(what)?,
    })
}

/// Writes a name and address.
pub(crate) fn write_node(w: &mut Writer, n: &NodeAddr) {
    w.lp(n.name.as_str().as_bytes());
    w.addr(n.addr);
}
