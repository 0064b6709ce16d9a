//! Navarch's scenario format (see the helper brief): to be written.
