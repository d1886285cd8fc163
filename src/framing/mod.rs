//! Framing: the sticky-packet (粘包) solution (work in progress).
