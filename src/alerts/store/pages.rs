//! The Alerts pages' SQL: lists, history, acknowledgements, silences.
