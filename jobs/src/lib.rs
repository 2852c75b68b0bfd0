//! The logsight job manager: incidents, per-minute log aggregates and pruning (see issue "Job manager").
