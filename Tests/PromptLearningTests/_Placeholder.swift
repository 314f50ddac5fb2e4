// Placeholder so the target is not empty while it is being written; removed once real files land.
