"""What a message is made of: templates, tables, attachments (one module per format), the MIME
layout, and the composer that puts them together."""
