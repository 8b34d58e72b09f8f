"""Helpers shared by the Streamlit pages (the only place besides pages/ that imports streamlit)."""
