//! A faithful in-process fake of the Clerk Backend API users endpoints.
