//! The solver's commands and events (filled in below).
