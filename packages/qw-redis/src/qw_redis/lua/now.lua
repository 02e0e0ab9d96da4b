return fmt(now_us())
